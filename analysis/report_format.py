"""How the report writes numbers and size categories: one format per kind of variable (joules, watts,
seconds, percentages, p-values), shared by every table and sentence of report.md and report.html."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.catalog import SIZE_CATEGORIES


# ---------------------------------------------------------------- formatting

def fmt(v, var: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, str):
        return v
    v = float(v)
    if var in ("output_match_rate", "idle_share", "pass_at_1"):
        return f"{100 * v:.1f} %"
    if var.endswith("_pct") or var.endswith("pct"):
        return f"{v:.1f}"
    if var.endswith("_j") or var.endswith("_w"):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    if var.endswith("_s"):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
    if var.startswith("p_value") or var == "p":
        return f"{v:.3g}"
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{int(v)}"
    return f"{v:.3g}"


def pretty(df: pd.DataFrame, var_of=None) -> pd.DataFrame:
    """Format every cell; ``var_of(column)`` says which variable's format a column takes."""
    out = df.copy()
    for c in out.columns:
        var = var_of(c) if var_of else c
        out[c] = [fmt(v, var) for v in out[c]]
    return out


def cat_name(cat) -> str:
    if cat is None or (isinstance(cat, float) and math.isnan(cat)):
        return "unknown size"
    return f"category {int(cat)} ({SIZE_CATEGORIES.get(int(cat), '?')})"
