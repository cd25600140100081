"""The report's section on precision: per model, each configuration run below fp32 beside the same
configuration at fp32 — its energy and time (medians over repetitions) and their change, with what the
precision cost in output: the share of prompts whose tokens equal the fp32 run's and torch fp32's, and
pass@1 where the runs were scored. Energy keeps its provenance; a change between a measured and an
estimated figure is refused, never computed. Present only when some run is below fp32."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import provenance as P
from analysis.catalog import config_sort_key, model_sort_key
from analysis.quantities import fp32_config, reference_config
from analysis.report_content import Section
from analysis.report_format import fmt
from analysis.report_tables import REFUSED_MIXED

ENERGY = "energy_global_j"


def _median(rows: pd.DataFrame, col: str) -> float:
    v = pd.to_numeric(rows[col], errors="coerce").dropna() if col in rows else pd.Series(dtype=float)
    return float(v.median()) if len(v) else float("nan")


def _words(change: str, what: str) -> str:
    """'-22.2 %' → '22.2 % less <what>'; '+5.0 %' → '5.0 % more <what>'."""
    return f"{change[1:]} {'less' if change.startswith('-') else 'more'} {what}"


def _change(value: float, base: float) -> str:
    """'-23.4 %' (lower precision against fp32); '' where either is missing."""
    if not (np.isfinite(value) and np.isfinite(base)) or base == 0:
        return ""
    return f"{100 * (value - base) / base:+.1f} %"


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, variant below fp32) that has its configuration's fp32 runs beside it."""
    runs = P.with_provenance(runs)
    pcol = P.provenance_column(ENERGY)
    out = []
    for (model, config), rows in runs.groupby(["model", "config"], sort=False):
        base = fp32_config(config)
        if base is None:
            continue
        ref = runs[(runs["model"] == model) & (runs["config"] == base)]
        e, e0 = _median(rows, ENERGY), _median(ref, ENERGY)
        kind = P.combine(rows[pcol]) if pcol in rows else P.MISSING
        kind0 = P.combine(ref[pcol]) if pcol in ref and len(ref) else P.MISSING
        if P.comparable(kind, kind0):  # both measured or both estimated
            energy_change = _change(e, e0)
        else:
            energy_change = REFUSED_MIXED if np.isfinite(e) and np.isfinite(e0) else ""
        t, t0 = _median(rows, "time_s"), _median(ref, "time_s")
        pass1, pass0 = _median(rows, "pass_at_1"), _median(ref, "pass_at_1")
        out.append({
            "model": model, "config": config, "fp32": base, "runs": len(rows), "fp32_runs": len(ref),
            "energy_j": e, "energy_kind": kind, "fp32_energy_j": e0, "fp32_energy_kind": kind0,
            "energy_change": energy_change, "time_s": t, "fp32_time_s": t0, "time_change": _change(t, t0),
            "tokens_per_s": _median(rows, "tokens_per_s"), "fp32_tokens_per_s": _median(ref, "tokens_per_s"),
            "match_fp32": _median(rows, "output_match_fp32_rate"),
            "match_torch": _median(rows, "output_match_rate"), "torch": reference_config(config),
            "pass_at_1": pass1, "pass_change_pts": 100 * (pass1 - pass0) if np.isfinite(pass1) and
            np.isfinite(pass0) else float("nan"),
        })
    frame = pd.DataFrame(out)
    if len(frame):
        frame = frame.sort_values(["model", "config"], key=lambda s: s.map(
            model_sort_key if s.name == "model" else config_sort_key)).reset_index(drop=True)
    return frame


def _energy_cell(value: float, kind: str) -> str:
    if kind == P.MIXED:
        return REFUSED_MIXED
    text = fmt(value, ENERGY)
    return f"{text} ({kind})" if text and kind in (P.MEASURED, P.ESTIMATED) else text or "missing"


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %" if np.isfinite(v) else "not compared"


def model_table(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for _, r in rows.iterrows():
        out.append({
            "configuration": r["config"],
            "against": r["fp32"],
            "runs (fp32 runs)": f"{r['runs']} ({r['fp32_runs']})",
            "global energy [J]": _energy_cell(r["energy_j"], r["energy_kind"]),
            "at fp32 [J]": _energy_cell(r["fp32_energy_j"], r["fp32_energy_kind"]) if r["fp32_runs"] else "no fp32 run",
            "energy change": r["energy_change"],
            "time [s]": fmt(r["time_s"], "time_s"), "time change": r["time_change"],
            "tokens/s (at fp32)": f"{fmt(r['tokens_per_s'])} ({fmt(r['fp32_tokens_per_s'])})",
            "same tokens as at fp32": _pct(r["match_fp32"]),
            "same tokens as torch fp32": _pct(r["match_torch"]) + (f" ({r['torch']})" if np.isfinite(r["match_torch"])
                                                                   else f" (no {r['torch']} run)"),
            **({"pass@1 (change, points)": f"{fmt(r['pass_at_1'], 'pass_at_1')} ({r['pass_change_pts']:+.1f})"}
               if np.isfinite(r["pass_at_1"]) and np.isfinite(r["pass_change_pts"]) else {}),
        })
    return pd.DataFrame(out).fillna("")  # a column only some rows have (pass@1) is blank, never "nan"


def sentence(r) -> str:
    """One plain sentence per variant: what it saved and what it changed."""
    parts = [f"**{r['config']}** on {r['model']}"]
    if r["energy_change"] and r["energy_change"] != REFUSED_MIXED:
        parts.append(f"used {_words(r['energy_change'], 'global energy')} ({r['energy_kind']}) than {r['fp32']}")
    elif r["energy_change"] == REFUSED_MIXED:
        parts.append(f"is not compared in energy with {r['fp32']} (one is measured, the other estimated)")
    if r["time_change"]:
        parts.append(_words(r["time_change"], "time"))
    text = ", ".join(parts)
    if np.isfinite(r["match_fp32"]):
        text += f"; {_pct(r['match_fp32'])} of its prompts gave the same tokens as at fp32"
    if np.isfinite(r["pass_change_pts"]):
        text += f"; pass@1 changed by {r['pass_change_pts']:+.1f} points"
    return text + "."


def precision_section(runs: pd.DataFrame) -> Section | None:
    if "config" not in runs or not runs["config"].astype(str).str.contains("@", regex=False).any():
        return None
    summary = summarize(runs)
    sec = Section("Precision: what a lower precision saves and what it changes")
    sec.text("A configuration run below fp32 is named `<config>@<precision>` and set beside the same configuration "
             "at fp32 (medians over repetitions; changes are lower precision against fp32). Its output is compared "
             "with the fp32 run's and with torch fp32's: the share of prompts whose generated token ids are "
             "identical. A lower precision that changes tokens does different work, so its energy is not a "
             "like-for-like saving; where the runs were scored, pass@1 says what the change cost in correct "
             "answers.")
    if not len(summary):
        return sec.text("No run below fp32 has its configuration's fp32 runs beside it: nothing to compare.")
    sec.items([sentence(r) for _, r in summary.iterrows()])
    for model, rows in summary.groupby("model", sort=False):
        sec.subsection(str(model)).table(model_table(rows))
    missing = summary[summary["fp32_runs"] == 0]
    sec.warning("No fp32 runs to compare with", [f"{r['model']} {r['config']}: run {r['fp32']} too"
                                                 for _, r in missing.iterrows()])
    return sec
