"""The report's tables and the provenance words they carry: a frame pivoted to one column per
configuration with "estimated" in the header (a column all estimated) or in the cell, "refused" where
measured and estimated would mix; and the savings table against torch-cpu.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import intervals as I
from analysis import provenance as P
from analysis.catalog import ALL_VARIABLES, config_sort_key, model_sort_key
from analysis.report_content import Section
from analysis.report_format import fmt

REFUSED_MIXED = "refused (measured+estimated)"


# ---------------------------------------------------------------- provenance words

def kinds(frame: pd.DataFrame, var: str) -> set[str]:
    """The provenances present for ``var`` in ``frame`` (empty for a variable that is not energy)."""
    pcol = P.provenance_column(var)
    if not P.is_energy(var) or pcol not in frame:
        return set()
    return {k for k in frame[pcol].dropna().astype(str) if k != P.MISSING}


def kinds_text(ks: set[str]) -> str:
    if not ks:
        return ""
    if ks == {P.MEASURED}:
        return "measured"
    if ks == {P.ESTIMATED}:
        return "estimated"
    return "measured or estimated"


def vlabel(var: str, ks: set[str]) -> str:
    """A variable's catalogue name, with its provenance when it is energy."""
    name = ALL_VARIABLES.get(var, var)
    return f"{name}, {kinds_text(ks)}" if kinds_text(ks) else name


def prov_table(frame: pd.DataFrame, index: list[str], var: str) -> tuple[pd.DataFrame, str]:
    """``frame`` pivoted to one column per configuration, formatted, with provenance in the headers
    (a column whose values are all estimated) or the cells (``(estimated)``; refused = mixed), and the
    provenance phrase for the caption. Where ``frame`` has the median's confidence interval
    (analysis/intervals.py), a cell reads ``median [low, high]``."""
    if var not in frame:
        return pd.DataFrame(), ""
    pcol = P.provenance_column(var)
    has_p = P.is_energy(var) and pcol in frame
    vals = pd.to_numeric(frame[var], errors="coerce")
    keep = vals.notna() | ((frame[pcol] == P.MIXED) if has_p else False)
    if "refused" in frame:
        keep |= frame["refused"].fillna("").astype(str).str.contains(f"{var}:", regex=False)
    sub = frame[keep]
    if sub.empty:
        return pd.DataFrame(), ""
    configs = sorted(sub["config"].unique(), key=config_sort_key)
    keys = sub[index].drop_duplicates()
    keys = keys.sort_values(index, key=lambda s: s.map(model_sort_key) if s.name == "model" else s)
    lo_col, hi_col = I.low_column(var), I.high_column(var)
    cell = {(tuple(r[index]), r["config"]): (v, r[pcol] if has_p else "", str(r.get("refused", "") or ""))
            for (_, r), v in zip(sub.iterrows(), vals[keep])}
    ci = {(tuple(r[index]), r["config"]): (r[lo_col], r[hi_col]) for _, r in sub.iterrows()} \
        if lo_col in sub and hi_col in sub else {}
    col_kinds = {c: {p for (k, cc), (v, p, _) in cell.items() if cc == c and p} for c in configs}
    uniform_est = {c for c, ks in col_kinds.items() if ks == {P.ESTIMATED}}
    rows = []
    for _, k in keys.iterrows():
        key = tuple(k[index])
        row = {}
        for i, c in enumerate(index):
            v = k[c]
            row[c] = ("?" if pd.isna(v) else str(int(v))) if c == "size_category" else v
        for c in configs:
            v, p, why = cell.get((key, c), (np.nan, "", ""))
            if p == P.MIXED:
                text = REFUSED_MIXED
            elif pd.isna(v) and f"{var}:" in why:
                text = "refused (incomplete block)"
            else:
                text = fmt(v, var)
                lo, hi = ci.get((key, c), (np.nan, np.nan))
                if text and pd.notna(lo) and pd.notna(hi):
                    text += f" [{fmt(lo, var)}, {fmt(hi, var)}]"
                if text and p == P.ESTIMATED and c not in uniform_est:
                    text += " (estimated)"
            row[c + (" (estimated)" if c in uniform_est else "")] = text
        rows.append(row)
    ks = {p for (_, p, _) in cell.values() if p and p != P.MISSING}
    return pd.DataFrame(rows), kinds_text(ks)


def savings_table(sec: Section, sav: pd.DataFrame, evar: str | None):
    if sav is None or sav.empty:
        return
    vs = sav[(sav["level"] == "category") & (sav["baseline"] == "torch-cpu")
             & sav["variable"].isin([v for v in (evar, "time_s") if v])]
    if vs.empty:
        return
    rows = {}
    for r in vs.itertuples(index=False):
        key = (r.size_category, r.config)
        row = rows.setdefault(key, {"size_category": "?" if pd.isna(r.size_category) else str(int(r.size_category)),
                                    "config": r.config})
        if r.variable == "time_s":
            row["time saving vs torch-cpu [%]"] = fmt(r.saving_pct, "pct")
        else:
            row["energy"] = r.provenance
            row["energy saving vs torch-cpu [%]"] = ("refused: " + r.refused) if r.refused else fmt(r.saving_pct, "pct")
    t = pd.DataFrame([rows[k] for k in sorted(rows, key=lambda k: (k[0], config_sort_key(k[1])))])
    ks = set(vs.loc[vs["variable"] == evar, "provenance"]) if evar else set()
    lab = "" if not ks else ("estimated" if ks == {P.ESTIMATED} else "measured" if ks == {P.MEASURED}
                             else "measured and estimated, never compared with each other")
    if lab:
        t = t.rename(columns={"energy saving vs torch-cpu [%]": f"{lab} energy saving vs torch-cpu [%]",
                              "energy": "energy: measured or estimated"})
    sec.table(t, "Savings against torch-cpu (positive = less than torch-cpu)"
              + (f"; energy: {lab}" if lab else "") + "; all pairs in savings.csv")
