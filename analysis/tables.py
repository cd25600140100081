"""Tables computed from the per-run table: medians per model x configuration, the study's aggregated
tables (mean of medians per size category x configuration), savings between configurations, and the
flags that follow a configuration through every table.

Flags are ``;``-separated tokens: ``estimated:cpu`` (an energy source is an estimate),
``incomplete:gpu`` / ``missing:wall`` (a sensor did not cover the window), ``failed_requests``,
``global=cpu-only`` (no GPU on the host: global energy is CPU alone), ``output_match=97.6%`` (generated
token ids differ from the torch reference of the same provider).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import provenance as P
from analysis.blocks import complete_block
from analysis.catalog import (ALL_VARIABLES, ENERGY_DOMAINS, RUN_COLUMNS, canonical_model, config_sort_key,
                              model_sort_key, size_category_for, CONFIG_RE)
from analysis.intervals import add_median_cis

SAVINGS_VARIABLES = ("energy_global_j", "energy_wall_j", "dynamic_energy_global_j", "time_s")
FULL_MATCH = 1.0 - 1e-9


class TableError(ValueError):
    """A --table file analysis cannot use; the message says what is wrong and what is expected."""


# ---------------------------------------------------------------- flags

def split_flags(value) -> list[str]:
    if not isinstance(value, str) or not value.strip():
        return []
    return [f.strip() for f in value.split(";") if f.strip()]


def join_flags(flags) -> str:
    return ";".join(dict.fromkeys(f for f in flags if f))


def match_flag(rate) -> str | None:
    if rate is None or not np.isfinite(rate) or rate >= FULL_MATCH:
        return None
    return f"output_match={100 * rate:.1f}%"


def _group_flags(run_flags: pd.Series, match_rate: float) -> str:
    """Flags of a model x config from its runs' flags: kinds only (``failed_requests=2`` ->
    ``failed_requests``), the output match recomputed over the group."""
    kinds = []
    for value in run_flags:
        for f in split_flags(value):
            if f.startswith("output_match"):
                continue
            kinds.append(f.split("=", 1)[0] if f.startswith(("failed_requests", P.NEGATIVE_PREFIX)) else f)
    return join_flags(sorted(set(kinds)) + [match_flag(match_rate)])


# ---------------------------------------------------------------- --table input

def load_table(path: Path) -> pd.DataFrame:
    """A per-run (or per-median) table measured elsewhere -> the runs table.

    Needs ``model`` and ``config`` columns and at least one variable column named as in runs.csv
    (``energy_global_j``, ``time_s``...). ``size_category`` is looked up from the model when absent;
    ``rep`` defaults to 1, 2, ... within each model x config; ``output_match_rate`` is a ratio 0-1
    (a column in percent, 0-100, is converted with a warning).
    """
    path = Path(path)
    if not path.is_file():
        raise TableError(f"--table {path}: no such file")
    try:
        df = pd.read_csv(path)
    except Exception as e:
        raise TableError(f"--table {path}: not a readable CSV ({e})") from e
    df.columns = [str(c).strip() for c in df.columns]
    given = list(df.columns)
    missing = [c for c in ("model", "config") if c not in df]
    if missing:
        raise TableError(f"--table {path}: missing column(s) {', '.join(missing)}; a table needs model, config "
                         f"and variable columns such as {', '.join(list(ALL_VARIABLES)[:5])}")
    variables = [c for c in ALL_VARIABLES if c in df]
    if not variables:
        raise TableError(f"--table {path}: no variable columns; expected some of {', '.join(ALL_VARIABLES)}")
    warnings: list[str] = []
    df["model"] = df["model"].astype(str).map(canonical_model)
    df["config"] = df["config"].astype(str).str.strip().str.lower()
    bad = sorted(c for c in df["config"].unique() if not CONFIG_RE.match(c))
    if bad:
        warnings.append(f"configurations not of the form <engine>-<cpu|cuda>: {', '.join(bad)}")
    for col in variables:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    if "output_match_rate" in df and (df["output_match_rate"] > 1).any():
        warnings.append("output_match_rate has values > 1: read as percent and divided by 100")
        df["output_match_rate"] = df["output_match_rate"] / 100.0
    if "size_category" in df:
        df["size_category"] = pd.to_numeric(df["size_category"], errors="coerce")
    else:
        df["size_category"] = np.nan
    lookup = df["model"].map(lambda m: size_category_for(m))
    df["size_category"] = df["size_category"].fillna(lookup.astype("float"))
    unknown = sorted(df.loc[df["size_category"].isna(), "model"].unique())
    if unknown:
        warnings.append(f"no size category for model(s) {', '.join(unknown)} (add a size_category column)")
    if "rep" not in df:
        df["rep"] = df.groupby(["model", "config"]).cumcount() + 1
    if "run_id" not in df:
        df["run_id"] = [f"{path.name}:{i + 2}" for i in range(len(df))]  # the CSV line number
    if "energy_global_parts" not in df and "energy_global_j" in df:
        df["energy_global_parts"] = "cpu+gpu"
    flags = df["flags"].map(split_flags) if "flags" in df else pd.Series([[] for _ in range(len(df))], index=df.index)
    if "output_match_rate" in df:
        flags = [f + [match_flag(r)] for f, r in zip(flags, df["output_match_rate"])]
    for dom in ENERGY_DOMAINS:
        col = f"energy_{dom}_estimated"
        if col in df:
            est = df[col].astype(str).str.lower().isin(["true", "1", "yes"])
            flags = [f + ([f"estimated:{dom}"] if e else []) for f, e in zip(flags, est)]
    df["flags"] = [join_flags(f) for f in flags]
    kept = [c for c in ("study",) if c in df and c not in RUN_COLUMNS]  # for --study selection
    ignored = [c for c in df.columns if c not in RUN_COLUMNS and c not in kept]
    if ignored:
        warnings.append(f"columns not used: {', '.join(ignored)}")
    for col in RUN_COLUMNS:
        if col not in df:
            df[col] = np.nan
    df = df[list(RUN_COLUMNS) + kept]
    df.attrs["warnings"] = warnings
    df.attrs["columns"] = given
    return df


# ---------------------------------------------------------------- aggregation

def variables_in(df: pd.DataFrame) -> list[str]:
    """The known numeric variables that have at least one value in ``df``."""
    return [c for c in ALL_VARIABLES if c in df and pd.to_numeric(df[c], errors="coerce").notna().any()]


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    def key(s):
        if s.name == "model":
            return s.map(model_sort_key)
        if s.name in ("config", "baseline"):
            return s.map(config_sort_key)
        return s
    return df.sort_values(keys, key=key, na_position="last").reset_index(drop=True)


def _any_true(s: pd.Series):
    """True if any run says true, False if all say false, NaN if none says (not measured)."""
    s = s.dropna()
    return bool(s.astype(str).str.lower().isin(["true", "1"]).any()) if len(s) else np.nan


def _beside(df: pd.DataFrame) -> pd.DataFrame:
    """Columns reordered so that each ``<var>_provenance`` stands right after ``<var>``."""
    cols = [c for c in df.columns if not c.endswith("_provenance") or c[:-len("_provenance")] not in df]
    out = []
    for c in cols:
        out.append(c)
        if P.provenance_column(c) in df:
            out.append(P.provenance_column(c))
    return df[out]


def medians(runs: pd.DataFrame) -> pd.DataFrame:
    """Median over repetitions per model x configuration, of every variable; ``n_runs`` and flags.

    Every energy variable gets ``<var>_provenance`` beside it (measured / estimated / missing); a group
    whose runs mix measured and estimated values gets ``mixed`` and no median (refused). The medians
    the report shows get a bootstrap confidence interval (``<var>_ci_low``/``_ci_high``, after the
    provenance; analysis/intervals.py).
    """
    runs = P.mark_negative(runs)
    variables = [c for c in ALL_VARIABLES if c in runs]
    keys = ["model", "size_category", "config"]
    num = runs[keys + variables].copy()
    for c in variables:
        num[c] = pd.to_numeric(num[c], errors="coerce")
    g = num.groupby(keys, dropna=False, sort=False)
    out = g[variables].median()
    out.insert(0, "n_runs", g.size())
    # output equivalence is a share of prompts over all repetitions: a mean, not a median
    out["output_match_rate"] = g["output_match_rate"].mean()
    for var in variables:
        if P.is_energy(var):
            prov = P.run_provenance(runs, var).groupby([runs[k] for k in keys], dropna=False, sort=False).agg(
                P.combine)
            out[P.provenance_column(var)] = prov
            out.loc[out[P.provenance_column(var)] == P.MIXED, var] = np.nan  # refused
    for dom in ENERGY_DOMAINS:
        src, est = f"energy_{dom}_source", f"energy_{dom}_estimated"
        if src in runs:
            out[src] = runs.groupby(keys, dropna=False, sort=False)[src].agg(
                lambda s: "+".join(sorted({str(v) for v in s.dropna()})) or np.nan)
        if est in runs:
            out[est] = runs.groupby(keys, dropna=False, sort=False)[est].agg(_any_true)
    fl = runs.groupby(keys, dropna=False, sort=False)["flags"].agg(list)
    out["flags"] = [_group_flags(pd.Series(f), r) for f, r in zip(fl, out["output_match_rate"])]
    med = _beside(_sorted(out.reset_index(), ["size_category", "model", "config"]))
    return add_median_cis(med, num, keys)


def aggregated(med: pd.DataFrame) -> pd.DataFrame:
    """Mean of the medians per size category x configuration (the study's Tables 4-5), over the
    category's complete block: the models that have every configuration of the category.

    ``models`` / ``n_models`` = the block, ``left_out`` = the category's other models and the configs
    they have. A configuration whose value is missing for a block model gets no mean for that variable
    (``refused`` says why) rather than a mean over fewer models; an energy mean over measured and
    estimated medians is refused too (``<var>_provenance`` = mixed).
    """
    variables = [c for c in ALL_VARIABLES if c in med and c != "output_match_rate"]
    rows = []
    for cat, grp in med.groupby("size_category", dropna=False, sort=False):
        block = complete_block(grp, f"the aggregated table, size category {_cat(cat)}")
        inb = grp[grp["model"].isin(block.models)]
        left = "; ".join(f"{m} (has only {', '.join(h)})" for m, h in block.left_out.items())
        for cfg in block.configs:
            sub = inb[inb["config"] == cfg]
            row = {"size_category": cat, "config": cfg, "n_models": len(block.models),
                   "models": ",".join(block.models), "left_out": left}
            refused = []
            for var in variables:
                vals = pd.to_numeric(sub[var], errors="coerce")
                prov = P.combine(sub[P.provenance_column(var)]) if P.provenance_column(var) in sub else None
                if prov == P.MIXED or (P.provenance_column(var) in sub
                                       and (sub[P.provenance_column(var)] == P.MIXED).any()):
                    prov = P.MIXED
                    refused.append(f"{var}: mixes measured and estimated medians")
                    value = np.nan
                elif vals.notna().all() or vals.isna().all():
                    value = vals.mean() if vals.notna().any() else np.nan
                else:
                    lacking = [m for m, v in zip(sub["model"], vals) if pd.isna(v)]
                    refused.append(f"{var}: no value for {', '.join(lacking)}")
                    value = np.nan
                row[var] = value
                if prov is not None:
                    row[P.provenance_column(var)] = prov
            row["output_match_rate"] = pd.to_numeric(sub["output_match_rate"], errors="coerce").min() \
                if "output_match_rate" in sub else np.nan  # the worst model decides
            row["flags"] = _aggregate_flags(sub)
            row["refused"] = "; ".join(refused)
            rows.append(row)
    cols = ["size_category", "config", "n_models", "models", "left_out"]
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=cols + variables + ["flags", "refused"])
    out = out[cols + [c for c in out.columns if c not in cols]]
    return _beside(_sorted(out, ["size_category", "config"]))


def _cat(cat) -> str:
    return "unknown" if pd.isna(cat) else str(int(cat))


def _aggregate_flags(group: pd.DataFrame) -> str:
    kinds, mismatched = [], []
    for model, flags, rate in zip(group["model"], group["flags"], group["output_match_rate"]):
        for f in split_flags(flags):
            if not f.startswith("output_match"):
                kinds.append(f)
        if match_flag(rate):
            mismatched.append(f"{model}:{100 * rate:.1f}%")
    tokens = sorted(set(kinds))
    if mismatched:
        tokens.append("output_match<100%(" + ",".join(mismatched) + ")")
    return join_flags(tokens)


def savings(med: pd.DataFrame, agg: pd.DataFrame, variables=SAVINGS_VARIABLES) -> pd.DataFrame:
    """Relative savings between configurations, per model and per size category.

    ``saving_pct`` = (baseline - value) / baseline x 100: how much less of ``variable`` ``config`` needs
    than ``baseline`` (negative: it needs more). Per category the values are the aggregated table's
    (mean of medians over the category's complete block). Every ordered pair of configurations with
    both values present. ``provenance``: measured / estimated for energy (empty for time); a pair of a
    measured and an estimated figure, a baseline <= 0 or a negative energy above idle gets no saving,
    and ``refused`` says why.
    """
    rows = []
    for level, frame, group_keys in (("model", med, ["size_category", "model"]), ("category", agg, ["size_category"])):
        for var in variables:
            if var not in frame:
                continue
            pcol = P.provenance_column(var)
            for key, grp in frame.groupby(group_keys, dropna=False, sort=False):
                key = key if isinstance(key, tuple) else (key,)
                vals = {c: v for c, v in zip(grp["config"], pd.to_numeric(grp[var], errors="coerce")) if np.isfinite(v)}
                provs = dict(zip(grp["config"], grp[pcol])) if pcol in grp else {}
                flags = dict(zip(grp["config"], grp["flags"]))
                for cfg, v in vals.items():
                    for base, b in vals.items():
                        if cfg == base:
                            continue
                        prov, why = "", ""
                        if P.is_energy(var):
                            pa, pb = provs.get(cfg, P.MEASURED), provs.get(base, P.MEASURED)
                            prov = P.pair_provenance(pa, pb)
                            if not P.comparable(pa, pb):
                                why = f"compares {pa} ({cfg}) with {pb} ({base}) energy"
                        if var in P.DYNAMIC and (v < 0 or b < 0):
                            why = why or "negative energy above idle"
                        elif b <= 0:
                            why = why or "baseline <= 0"
                        rows.append({
                            "level": level,
                            "size_category": key[0],
                            "model": key[1] if level == "model" else "",
                            "variable": var,
                            "config": cfg,
                            "baseline": base,
                            "value": v,
                            "baseline_value": b,
                            "saving_pct": np.nan if why else 100.0 * (b - v) / b,
                            "provenance": prov,
                            "refused": why,
                            "flags": join_flags([f"{c}:{f}" for c in (cfg, base) for f in split_flags(flags.get(c))]),
                        })
    cols = ["level", "size_category", "model", "variable", "config", "baseline", "value", "baseline_value",
            "saving_pct", "provenance", "refused", "flags"]
    out = pd.DataFrame(rows, columns=cols)
    if len(out):
        out["_lvl"] = out["level"].map({"model": 0, "category": 1})
        out = _sorted(out, ["_lvl", "size_category", "model", "variable", "baseline", "config"]).drop(columns="_lvl")
    return out


def wide(frame: pd.DataFrame, index: list[str], variable: str) -> pd.DataFrame:
    """``frame`` pivoted to one column per configuration (for the report)."""
    if variable not in frame:
        return pd.DataFrame()
    piv = frame.pivot_table(index=index, columns="config", values=variable, aggfunc="first", dropna=False)
    cols = sorted(piv.columns, key=config_sort_key)
    piv = piv[cols]
    piv.columns.name = None
    piv = piv.dropna(how="all")
    if "model" in index:
        piv = piv.reset_index()
        piv = _sorted(piv, index)
        return piv.set_index(index)
    return piv


def flagged_configs(med: pd.DataFrame) -> pd.DataFrame:
    """Model x configuration groups with an output mismatch (for the report)."""
    m = med[pd.to_numeric(med["output_match_rate"], errors="coerce") < FULL_MATCH]
    return m[["model", "config", "output_match_rate", "n_runs"]]

