"""Which runs an analysis takes: ``--study``, ``--model``, ``--config``, ``--runs``, ``--hardware`` (comma lists), applied
after the run folders (and any --table) are read, to complete runs and to the incomplete run folders
that are listed as left out alike.

A value that matches no run (complete or not) is an error that lists what exists, as is a combination
of filters that matches nothing together: a typo never silently analyses nothing or everything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.catalog import canonical_model, config_sort_key, model_sort_key

FIELDS = ("study", "model", "config", "run_id", "host_fingerprint")
OPTION = {"study": "--study", "model": "--model", "config": "--config", "run_id": "--runs",
          "host_fingerprint": "--hardware"}
PLURAL = {"study": "studies", "model": "models", "config": "configs", "run_id": "runs",
          "host_fingerprint": "hardware fingerprints"}


class SelectionError(ValueError):
    """A filter that matches nothing; the message lists what exists."""


def parse_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    return list(dict.fromkeys(items))


@dataclass
class Selection:
    study: list[str] | None = None
    model: list[str] | None = None
    config: list[str] | None = None
    run_id: list[str] | None = None
    host_fingerprint: list[str] | None = None

    def __post_init__(self):
        if self.model:
            self.model = [canonical_model(m) for m in self.model]
        if self.config:
            self.config = [c.lower() for c in self.config]

    def active(self) -> dict[str, list[str]]:
        return {f: getattr(self, f) for f in FIELDS if getattr(self, f)}

    def describe(self) -> str:
        return " ".join(f"{OPTION[f]} {','.join(v)}" for f, v in self.active().items())


def _sorted(field: str, values) -> list[str]:
    key = {"model": model_sort_key, "config": config_sort_key}.get(field, str)
    return sorted({str(v) for v in values if isinstance(v, str) and v}, key=key)


def left_out_fields(lo) -> dict:
    """What an incomplete run folder's run.json says about it (fields it does not say are None);
    ``readable`` False when there is no readable run.json (nothing but the folder name is known)."""
    out = {"study": None, "model": None, "config": None, "run_id": lo.run_id, "host_fingerprint": None,
           "readable": False}
    try:
        m = json.loads((Path(lo.path) / "run.json").read_text())
    except (OSError, ValueError, TypeError):
        return out
    if not isinstance(m, dict):
        return out
    out["readable"] = True
    study, model = m.get("study"), m.get("model")
    out["study"] = study.get("name") if isinstance(study, dict) else None
    if isinstance(model, dict) and (model.get("name") or model.get("source")):
        out["model"] = canonical_model(model.get("name") or model.get("source"))
    if m.get("config"):
        out["config"] = str(m["config"]).lower()
    from analysis.hardware import of_manifest

    out["host_fingerprint"] = of_manifest(m)
    return out


def _column(runs: pd.DataFrame, field: str) -> pd.Series:
    if field not in runs:
        return pd.Series([None] * len(runs), index=runs.index, dtype=object)
    return runs[field].map(lambda v: None if v is None or (isinstance(v, float) and v != v) or v == "" else str(v))


def apply(runs: pd.DataFrame, left_out: list, sel: Selection) -> tuple[pd.DataFrame, list, dict]:
    """(selected runs, selected incomplete folders, counts) or SelectionError.

    An incomplete folder without a readable run.json (e.g. a crash before run.json was written) is kept
    by --study/--model/--config (it may be exactly the run the filter is after); --runs goes by its name.
    """
    active = sel.active()
    lo_fields = [left_out_fields(lo) for lo in left_out]
    counts = {"filtered_runs": 0, "filtered_incomplete": 0}
    if not active:
        return runs, left_out, counts
    for field, wanted in active.items():
        have = set(_column(runs, field).dropna()) | {f[field] for f in lo_fields if f[field]}
        missing = [w for w in wanted if w not in have]
        if missing:
            listed = _sorted(field, have)
            raise SelectionError(
                f"{OPTION[field]} {','.join(missing)}: no run has {'this' if len(missing) == 1 else 'these'} "
                f"{field.replace('_', ' ')}{'' if len(missing) == 1 else 's'}; "
                + (f"{PLURAL[field]} present: {', '.join(listed[:40])}" + (" ..." if len(listed) > 40 else "")
                   if listed else f"the runs name no {field.replace('_', ' ')}"))
    keep = pd.Series(True, index=runs.index)
    for field, wanted in active.items():
        keep &= _column(runs, field).isin(wanted)
    keep_lo = [all((f[field] is None and not f["readable"] and field != "run_id") or f[field] in wanted
                   for field, wanted in active.items()) for f in lo_fields]
    known = [all(f[field] in wanted for field, wanted in active.items()) for f in lo_fields]
    if not keep.any() and not any(known):
        present = "; ".join(f"{PLURAL[f]}: {', '.join(_sorted(f, _column(runs, f).dropna())[:20]) or 'none'}"
                            for f in active)
        raise SelectionError(f"no run matches {sel.describe()} together (each matches some run alone); {present}")
    counts["filtered_runs"] = int((~keep).sum())
    counts["filtered_incomplete"] = int(len(keep_lo) - sum(keep_lo))
    return runs[keep].reset_index(drop=True), [lo for lo, k in zip(left_out, keep_lo) if k], counts


def took_line(runs: pd.DataFrame, left_out: list, counts: dict) -> str:
    """'took 12 runs (models: ...; configs: ...; studies: ...), left out 3 by filter, 2 incomplete'."""
    parts = []
    for field in ("model", "config", "study"):
        vals = _sorted(field, _column(runs, field).dropna())
        parts.append(f"{PLURAL[field]}: {', '.join(vals) if vals else 'none'}")
    filtered = counts.get("filtered_runs", 0) + counts.get("filtered_incomplete", 0)
    return (f"took {len(runs)} run(s) ({'; '.join(parts)}), left out {filtered} by filter, "
            f"{len(left_out)} incomplete")
