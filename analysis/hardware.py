"""Hardware as a blocking factor: configurations are compared only over runs measured on one hardware.

Every run records its host's fingerprint (run.json ``host.fingerprint``: CPU model and count, memory,
each GPU's model, UUID, memory and driver, and their digest; loadgen/hostinfo.py). Energy and time on
two machines differ for reasons that have nothing to do with the configuration, so when the runs an
analysis takes come from several fingerprints, the combined comparison is refused: runs.csv lists every
run with its ``host_fingerprint``, ``hardware.csv`` says what each fingerprint is, and each fingerprint
gets an analysis of its own (``hardware-<fingerprint>/``, the same tables, tests, figures and report).
``--hardware FP`` analyses one of them alone. Runs recorded before fingerprints existed (no
``host.fingerprint``) are of unknown hardware: they are analysed as before when the runs have at most
one fingerprint, and left out of every per-hardware analysis (named in hardware.csv) when several.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

COLUMN = "host_fingerprint"
UNKNOWN = "unknown"


def of_manifest(m: dict) -> str | None:
    """The run's short hardware fingerprint, None when its run.json has none."""
    host = m.get("host") if isinstance(m, dict) else None
    fp = host.get("fingerprint") if isinstance(host, dict) else None
    if not isinstance(fp, dict):
        return None
    return str(fp.get("short") or str(fp.get("sha256") or "")[:12]) or None


def fingerprints(runs: pd.DataFrame) -> list[str]:
    """The distinct known fingerprints of ``runs``, most runs first."""
    if COLUMN not in runs or not len(runs):
        return []
    vals = runs[COLUMN].dropna().astype(str)
    vals = vals[vals != ""]
    return list(vals.value_counts().index)


def describe(runs: pd.DataFrame, manifests: dict[str, dict]) -> pd.DataFrame:
    """hardware.csv: one row per fingerprint (and one for runs without): what it is, which hosts, how many
    runs of which models and configurations."""
    rows = []
    col = runs[COLUMN] if COLUMN in runs else pd.Series([None] * len(runs), index=runs.index)
    for fp, grp in runs.groupby(col.fillna(UNKNOWN).astype(str), sort=False):
        parts, hosts = {}, set()
        for rid in grp["run_id"].astype(str):
            host = (manifests.get(rid) or {}).get("host") or {}
            hosts.add(str(host.get("hostname") or "?"))
            parts = parts or ((host.get("fingerprint") or {}).get("parts") or {})
        gpus = parts.get("gpus") or []
        rows.append({COLUMN: fp, "runs": len(grp), "hosts": ", ".join(sorted(hosts)),
                     "cpu_model": parts.get("cpu_model"), "cpu_count": parts.get("cpu_count"),
                     "ram_gib": parts.get("ram_gib"),
                     "gpus": "; ".join(f"{g.get('name')} {g.get('uuid')} (driver {g.get('driver')})" for g in gpus)
                     or ("none" if parts else None),
                     "models": ", ".join(sorted(grp["model"].astype(str).unique())),
                     "configs": ", ".join(sorted(grp["config"].astype(str).unique())),
                     "analysis": f"hardware-{fp}/" if fp != UNKNOWN else "left out (no fingerprint recorded)"})
    return pd.DataFrame(rows)


def split_by_fingerprint(runs: pd.DataFrame, left_out: list) -> dict[str, tuple[pd.DataFrame, list]]:
    """{fingerprint: (its runs, its incomplete run folders)}; runs without a fingerprint are in no group."""
    groups = {}
    lo_fp = [_left_out_fp(lo) for lo in left_out]
    for fp in fingerprints(runs):
        mine = runs[runs[COLUMN].astype(str) == fp].reset_index(drop=True)
        groups[fp] = (mine, [lo for lo, f in zip(left_out, lo_fp) if f == fp])
    return groups


def _left_out_fp(lo) -> str | None:
    try:
        return of_manifest(json.loads((Path(lo.path) / "run.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def refusal_text(table: pd.DataFrame) -> str:
    """The top-level report when the runs come from several hardware fingerprints."""
    lines = ["# wattserve analysis: runs from several hardware fingerprints", "",
             f"The runs were measured on {sum(table[COLUMN] != UNKNOWN)} different hardware fingerprints "
             "(run.json host.fingerprint). Energy and time measured on different hardware are not compared "
             "as if they were one sample: the combined tables and tests are refused, and each fingerprint "
             "has its own analysis.", "",
             "| fingerprint | runs | hosts | CPU | GPUs | models | configs | analysis |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        d = r._asdict()
        link = f"[{d['analysis']}report.md]({d['analysis']}report.md)" if d[COLUMN] != UNKNOWN else d["analysis"]
        lines.append(f"| {d[COLUMN]} | {d['runs']} | {d['hosts']} | {d['cpu_model'] or '?'} "
                     f"({d['cpu_count'] or '?'} CPUs, {d['ram_gib'] or '?'} GiB) | {d['gpus'] or '?'} | {d['models']} "
                     f"| {d['configs']} | {link} |")
    lines += ["", "Every run, with its fingerprint: runs.csv; the fingerprints: hardware.csv. One of them alone: "
              "`python -m analysis --results ... --hardware <fingerprint>`."]
    return "\n".join(lines) + "\n"
