"""Hypothesis tests per model and dependent variable, as the study ran them, in one tidy table.

For each model and variable, with the configurations as groups:

1. ``shapiro`` - Shapiro-Wilk per configuration (``scipy.stats.shapiro``); ``group_a`` = the config.
2. ``levene`` - Levene's test of equal variances over the configurations (``scipy.stats.levene``,
   its default median centre, i.e. Brown-Forsythe). Reported; Welch's ANOVA does not need it.
3. If every configuration is normal (Shapiro p > alpha): ``welch_anova`` (``pingouin.welch_anova``;
   statistic F, effect size partial eta squared ``np2``) and ``games_howell`` pairs
   (``pingouin.pairwise_gameshowell``; statistic T, effect size Hedges' g of a vs b).
   Otherwise: ``kruskal`` (``scipy.stats.kruskal``; statistic H, effect size epsilon squared
   E2 = H / (n - 1), Tomczak & Tomczak 2014) and ``dunn`` pairs
   (``scikit_posthocs.posthoc_dunn(p_adjust="holm")``: p Holm-adjusted within the model x variable;
   statistic Dunn's z of a vs b; effect size Cliff's delta of a vs b, P(a > b) - P(a < b)).

Effect sizes of the pairs are signed: positive means ``group_a`` tends to be larger than ``group_b``.
Groups with fewer than 3 runs are left out of the comparison (Shapiro-Wilk needs 3); a group whose
values are all equal cannot be shown normal (so Kruskal-Wallis is used). A test that cannot run
gives a row with NaN numbers and the reason, never an exception.

Energy variables carry a ``provenance``: measured or estimated (for the groups the row involves). A
model whose configurations' energy mixes measured and estimated values (or a group that mixes them
itself) is not tested for that variable: one ``refused`` row says which configuration is which, because
a test between a measured and an estimated figure compares the estimate, not the configurations.

``in_block``: whether the model has every configuration tested for the variable (the complete block);
the summary across models (:func:`summarise`, the report's RQ3) counts only those models.

Columns: ``model, variable, test, group_a, group_b, statistic, p_value, effect_size`` (the tidy
result), then ``provenance``, ``in_block``, ``reason`` (why this test was chosen, or why it did not
run) and ``flags``.
"""

from __future__ import annotations

import gc
import os
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as ss

from analysis import provenance as P
from analysis.blocks import complete_block
from analysis.catalog import DEPENDENT_VARIABLES, config_sort_key, model_sort_key
from analysis.progress import progress

STATS_COLUMNS = ["model", "variable", "test", "group_a", "group_b", "statistic", "p_value", "effect_size",
                 "provenance", "in_block", "reason", "flags"]
MIN_RUNS = 3
EFFECT_SIZES = {
    "welch_anova": "partial eta squared (np2)",
    "games_howell": "Hedges' g (a vs b)",
    "kruskal": "epsilon squared, H / (n - 1)",
    "dunn": "Cliff's delta (a vs b)",
}


def _row(test, a="", b="", stat=np.nan, p=np.nan, eff=np.nan, reason="") -> dict:
    return {"test": test, "group_a": a, "group_b": b, "statistic": float(stat), "p_value": float(p),
            "effect_size": float(eff), "provenance": "", "reason": reason}


def dunn_z(groups: dict[str, np.ndarray]) -> dict[tuple[str, str], float]:
    """Dunn's z for every pair, with the tie correction (the statistic scikit-posthocs turns into p)."""
    names = list(groups)
    values = np.concatenate([groups[g] for g in names])
    ranks = ss.rankdata(values)
    n = len(values)
    _, counts = np.unique(values, return_counts=True)
    ties = float(np.sum(counts ** 3 - counts)) / (12.0 * (n - 1))
    var = n * (n + 1) / 12.0 - ties
    mean_rank, start = {}, 0
    for g in names:
        k = len(groups[g])
        mean_rank[g] = ranks[start:start + k].mean()
        start += k
    return {(a, b): (mean_rank[a] - mean_rank[b]) / np.sqrt(var * (1 / len(groups[a]) + 1 / len(groups[b])))
            for a, b in combinations(names, 2)}


def cliffs_delta(a: np.ndarray, b: np.ndarray) -> float:
    """P(a > b) - P(a < b) over all pairs (Cliff's delta; equals 2U/(n_a n_b) - 1 with Mann-Whitney U)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = np.sign(a[:, None] - b[None, :])
    return float(diff.sum() / diff.size)


def compare(groups: dict[str, np.ndarray], alpha: float = 0.05) -> list[dict]:
    """All rows for one model x variable: ``groups`` maps configuration -> values (NaN dropped here)."""
    groups = {g: np.asarray(v, dtype=float) for g, v in groups.items()}
    groups = {g: v[np.isfinite(v)] for g, v in sorted(groups.items(), key=lambda kv: config_sort_key(kv[0]))}
    groups = {g: v for g, v in groups.items() if len(v)}
    rows: list[dict] = []
    normal: dict[str, bool] = {}
    for g, v in groups.items():
        if len(v) < MIN_RUNS:
            rows.append(_row("shapiro", g, reason=f"n={len(v)} < {MIN_RUNS} runs: not tested, group left out"))
        elif np.ptp(v) == 0:
            normal[g] = False
            rows.append(_row("shapiro", g, reason=f"zero variance (all {len(v)} values equal): normality not testable"))
        else:
            w, p = ss.shapiro(v)
            normal[g] = bool(p > alpha)
            rows.append(_row("shapiro", g, stat=w, p=p))
    eligible = {g: v for g, v in groups.items() if len(v) >= MIN_RUNS}
    left = [f"{g} (n={len(v)})" for g, v in groups.items() if len(v) < MIN_RUNS]
    left_note = f"; left out: {', '.join(left)}" if left else ""

    if len(eligible) < 2:
        why = f"fewer than 2 configurations with >= {MIN_RUNS} runs{left_note or ''}"
        rows.append(_row("levene", reason=why))
        rows.append(_row("kruskal", reason=why))
        return rows

    data = list(eligible.values())
    if all(np.ptp(v) == 0 for v in data):
        rows.append(_row("levene", reason="every group has zero variance" + left_note))
    else:
        stat, p = ss.levene(*data)
        rows.append(_row("levene", stat=stat, p=p, reason=left_note.lstrip("; ")))

    if all(normal.get(g, False) for g in eligible):
        rows += _welch(eligible, alpha, left_note)
    else:
        not_normal = [g for g in eligible if not normal.get(g, False)]
        rows += _kruskal(eligible, f"not normal: {', '.join(not_normal)}{left_note}")
    return rows


def _welch(groups: dict[str, np.ndarray], alpha: float, left_note: str) -> list[dict]:
    import pingouin as pg

    long = pd.DataFrame({"config": np.repeat(list(groups), [len(v) for v in groups.values()]),
                         "y": np.concatenate(list(groups.values()))})
    aov = pg.welch_anova(data=long, dv="y", between="config").iloc[0]
    p = aov.get("p_unc", aov.get("p-unc"))
    rows = [_row("welch_anova", stat=aov["F"], p=p, eff=aov["np2"],
                 reason=f"all {len(groups)} groups normal (Shapiro-Wilk p > {alpha}){left_note}")]
    gh = pg.pairwise_gameshowell(data=long, dv="y", between="config", effsize="hedges")
    for r in gh.itertuples(index=False):
        a, b, t, g = r.A, r.B, r.T, r.hedges
        if config_sort_key(a) > config_sort_key(b):
            a, b, t, g = b, a, -t, -g
        rows.append(_row("games_howell", a, b, stat=t, p=r.pval, eff=g))
    pair_order = {pair: i for i, pair in enumerate(combinations(groups, 2))}
    head, pairs = rows[:1], rows[1:]
    pairs.sort(key=lambda r: pair_order.get((r["group_a"], r["group_b"]), 0))
    return head + pairs


def _kruskal(groups: dict[str, np.ndarray], reason: str) -> list[dict]:
    import scikit_posthocs as sp

    data = list(groups.values())
    n = sum(len(v) for v in data)
    values = np.concatenate(data)
    if np.ptp(values) == 0:
        return [_row("kruskal", reason=f"all {n} values identical: no ranks to compare ({reason})")]
    h, p = ss.kruskal(*data)
    rows = [_row("kruskal", stat=h, p=p, eff=h / (n - 1), reason=reason)]
    long = pd.DataFrame({"config": np.repeat(list(groups), [len(v) for v in data]), "y": values})
    pmat = sp.posthoc_dunn(long, val_col="y", group_col="config", p_adjust="holm")
    z = dunn_z(groups)
    for a, b in combinations(groups, 2):
        rows.append(_row("dunn", a, b, stat=z[(a, b)], p=pmat.loc[a, b], eff=cliffs_delta(groups[a], groups[b])))
    return rows


def _model_rows(model: str, sub: pd.DataFrame, variables: list[str], alpha: float) -> list[dict]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for var in variables:
            y = pd.to_numeric(sub[var], errors="coerce")
            if y.notna().sum() == 0:
                continue
            configs = [c for c in sub["config"].unique() if y[sub["config"] == c].notna().any()]
            groups = {c: y[sub["config"] == c].to_numpy() for c in configs}
            provs = {}
            pcol = P.provenance_column(var)
            if pcol in sub:
                provs = {c: P.combine(sub.loc[(sub["config"] == c) & y.notna(), pcol]) for c in configs}
            kinds = set(provs.values())
            if provs and (len(kinds) > 1 or P.MIXED in kinds):
                by = {k: sorted((c for c, v in provs.items() if v == k), key=config_sort_key) for k in sorted(kinds)}
                why = "refused: compares " + " with ".join(f"{k} ({', '.join(cs)})" for k, cs in by.items()) \
                      + " energy; not tested"
                r = _row("refused", reason=why)
                r.update(_configs=configs, provenance=" vs ".join(sorted(kinds)))
                out.append({"model": model, "variable": var, **r})
                continue
            prov = next(iter(kinds)) if kinds else ""
            for r in compare(groups, alpha):
                r["_configs"] = configs
                r["provenance"] = prov
                out.append({"model": model, "variable": var, **r})
    return out


def run_stats(runs: pd.DataFrame, variables=None, alpha: float = 0.05, flags: dict | None = None,
              quiet: bool = True, jobs: int | None = 1) -> pd.DataFrame:
    """The stats table for every model and variable (variables with no value for a model are skipped).

    ``flags`` maps (model, config) -> flags string; a row carries the flags of the configurations it
    involves, as ``config:flag``. ``jobs`` > 1 tests the models in parallel processes.
    """
    variables = [v for v in (variables or DEPENDENT_VARIABLES) if v in runs]
    if any(P.is_energy(v) and P.provenance_column(v) not in runs for v in variables):
        runs = P.with_provenance(runs)
    pcols = [P.provenance_column(v) for v in variables if P.provenance_column(v) in runs]
    flags = flags or {}
    models = sorted(runs["model"].dropna().unique(), key=model_sort_key)
    parts = [(m, runs.loc[runs["model"] == m, ["config", *variables, *pcols]]) for m in models]
    blocks = {v: complete_block(runs, f"the significance counts of {v}", var=v) for v in variables}
    bar = progress(total=len(models), desc="statistics", quiet=quiet, unit="model")
    results: dict[str, list[dict]] = {}
    # statsmodels' Holm correction (inside posthoc_dunn) calls gc.collect() every time: with the objects
    # of a whole analysis alive that costs ~0.1 s a call, so park them out of the collector's sight
    gc.freeze()
    try:
        jobs = max(1, min(jobs or os.cpu_count() or 1, len(models)))
        if jobs == 1:
            for m, sub in parts:
                results[m] = _model_rows(m, sub, variables, alpha)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                futs = {pool.submit(_model_rows, m, sub, variables, alpha): m for m, sub in parts}
                for fut in as_completed(futs):
                    results[futs[fut]] = fut.result()
                    bar.update()
    finally:
        gc.unfreeze()
        bar.close()
    out = []
    for m in models:
        for r in results[m]:
            involved = [r["group_a"], r["group_b"]] if r["group_a"] else r["_configs"]
            r["flags"] = ";".join(f"{c}:{f}" for c in involved if c
                                  for f in str(flags.get((m, c), "") or "").split(";") if f)
            r["in_block"] = m in blocks[r["variable"]].models
            out.append(r)
    df = pd.DataFrame(out, columns=STATS_COLUMNS)
    df.attrs["blocks"] = blocks
    return df


def _short_reason(reason: str) -> str:
    reason = str(reason or "")
    if reason.startswith("fewer than 2 configurations"):
        return f"fewer than 2 configurations with >= {MIN_RUNS} runs"
    if reason.startswith("refused:"):
        return "refused: measured and estimated energy"
    if reason.startswith("all ") and "identical" in reason:
        return "all values identical"
    return reason.split(";")[0] or "not run"


def summarise(stats: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per variable: how many models were tested, with which omnibus test, how many significant, and
    the share of significant pairs among models whose omnibus test was significant (for the report).

    Only models of the variable's complete block (``in_block``) are counted; ``models_left_out`` names
    the others. ``provenance``: the energy provenance of the counted tests (measured, estimated, or
    both kinds listed, each test being within one kind)."""
    rows = []
    if "in_block" in stats:
        stats = stats.assign(in_block=stats["in_block"].astype(str).str.lower().isin(["true", "1"]))
    else:
        stats = stats.assign(in_block=True)
    prov_col = stats["provenance"] if "provenance" in stats else pd.Series("", index=stats.index)
    stats = stats.assign(provenance=prov_col.fillna("").astype(str))
    for var, g_all in stats.groupby("variable", sort=False):
        left = sorted(set(g_all.loc[~g_all["in_block"], "model"]), key=model_sort_key)
        g_all = g_all[g_all["in_block"]]
        g = g_all[g_all["test"].isin(["welch_anova", "kruskal", "refused"])]
        pairs = g_all[g_all["test"].isin(["games_howell", "dunn"])]
        ran = g[g["p_value"].notna()]
        sig = ran[ran["p_value"] <= alpha]
        sig_models = set(sig["model"])
        why = g.loc[g["p_value"].isna(), "reason"].map(_short_reason)
        pv = pairs[pairs["model"].isin(sig_models)]
        provs = sorted({k for p in g["provenance"] if p for k in p.split(" vs ")})
        rows.append({
            "variable": var,
            "provenance": " and ".join(provs),
            "models_tested": int(ran["model"].nunique()),
            "models_not_tested": int(g.loc[g["p_value"].isna(), "model"].nunique()),
            "not_tested_reason": "; ".join(f"{k} ({v})" for k, v in why.value_counts().items()),
            "models_left_out": ", ".join(left),
            "welch_anova": int((ran["test"] == "welch_anova").sum()),
            "kruskal": int((ran["test"] == "kruskal").sum()),
            "significant_models": int(len(sig_models)),
            "significant_pairs": int((pv["p_value"] <= alpha).sum()),
            "pairs_compared": int(pv["p_value"].notna().sum()),
            "median_effect_size_welch_np2": float(ran.loc[ran["test"] == "welch_anova", "effect_size"].median()),
            "median_effect_size_kruskal_e2": float(ran.loc[ran["test"] == "kruskal", "effect_size"].median()),
        })
    return pd.DataFrame(rows)
