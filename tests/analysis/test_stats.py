"""The statistics table on synthetic data with known effects, pinned to SciPy, statsmodels and
scikit-posthocs reference calls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scikit_posthocs as sp
from scipy import stats as ss
from statsmodels.stats.oneway import anova_oneway

from analysis.stats import STATS_COLUMNS, cliffs_delta, compare, dunn_z, run_stats, summarise

CONFIGS = ["torch-cpu", "onnx-cpu", "ov-cpu", "torch-cuda"]


def rows(groups, alpha=0.05) -> pd.DataFrame:
    return pd.DataFrame(compare(groups, alpha))


def normal_groups(seed=0, n=10, means=(100, 80, 60, 20), sds=(3, 2, 5, 1)):
    rng = np.random.default_rng(seed)
    return {c: rng.normal(m, s, n) for c, m, s in zip(CONFIGS, means, sds)}


def skewed_groups(seed=1, n=10):
    rng = np.random.default_rng(seed)
    # lognormal with a large sigma: clearly skewed, Shapiro-Wilk rejects normality
    return {c: np.exp(rng.normal(np.log(m), 1.2, n)) for c, m in zip(CONFIGS, (100, 80, 40, 5))}


def first_normal_seed(make, want_normal: bool):
    for seed in range(200):
        g = make(seed)
        if all(ss.shapiro(v).pvalue > 0.05 for v in g.values()) == want_normal:
            return seed, g
    raise AssertionError("no seed gave the wanted normality outcome")


def test_clear_normal_differences_choose_welch_and_match_statsmodels():
    seed, groups = first_normal_seed(lambda s: normal_groups(s), want_normal=True)
    df = rows(groups)
    assert list(df["test"]) == ["shapiro"] * 4 + ["levene", "welch_anova"] + ["games_howell"] * 6
    welch = df[df["test"] == "welch_anova"].iloc[0]
    # reference: statsmodels.stats.oneway.anova_oneway(groups, use_var="unequal") (Welch's F)
    ref = anova_oneway(list(groups.values()), use_var="unequal", welch_correction=True)
    assert welch["statistic"] == pytest.approx(ref.statistic, rel=1e-9)
    assert welch["p_value"] == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-300)
    assert welch["p_value"] < 1e-6
    assert 0 < welch["effect_size"] <= 1  # partial eta squared
    assert "all 4 groups normal" in welch["reason"]
    # Shapiro-Wilk and Levene rows are scipy's numbers
    for c, v in groups.items():
        r = df[(df["test"] == "shapiro") & (df["group_a"] == c)].iloc[0]
        assert (r["statistic"], r["p_value"]) == pytest.approx(tuple(ss.shapiro(v)))
    lev = df[df["test"] == "levene"].iloc[0]
    assert (lev["statistic"], lev["p_value"]) == pytest.approx(tuple(ss.levene(*groups.values())))
    # Games-Howell pairs in configuration order, every pair significant, signs: a > b -> positive
    gh = df[df["test"] == "games_howell"]
    assert list(zip(gh["group_a"], gh["group_b"]))[:3] == [("torch-cpu", "onnx-cpu"), ("torch-cpu", "ov-cpu"),
                                                            ("torch-cpu", "torch-cuda")]
    assert (gh["p_value"] < 0.05).all()
    assert (gh["statistic"] > 0).all() and (gh["effect_size"] > 0).all()  # means decrease along CONFIGS


def test_skewed_data_choose_kruskal_and_dunn_matching_scipy_and_scikit_posthocs():
    seed, groups = first_normal_seed(lambda s: skewed_groups(s), want_normal=False)
    df = rows(groups)
    assert list(df["test"]) == ["shapiro"] * 4 + ["levene", "kruskal"] + ["dunn"] * 6
    kw = df[df["test"] == "kruskal"].iloc[0]
    h, p = ss.kruskal(*groups.values())  # reference: scipy.stats.kruskal
    assert (kw["statistic"], kw["p_value"]) == pytest.approx((h, p))
    n = sum(len(v) for v in groups.values())
    assert kw["effect_size"] == pytest.approx(h / (n - 1))  # epsilon squared
    assert kw["reason"].startswith("not normal:")
    long = pd.DataFrame({"g": np.repeat(list(groups), 10), "y": np.concatenate(list(groups.values()))})
    holm = sp.posthoc_dunn(long, val_col="y", group_col="g", p_adjust="holm")
    raw = sp.posthoc_dunn(long, val_col="y", group_col="g")
    dunn = df[df["test"] == "dunn"]
    for r in dunn.itertuples():
        assert r.p_value == pytest.approx(holm.loc[r.group_a, r.group_b])
        # Dunn's z reproduces scikit-posthocs' unadjusted two-sided p
        assert 2 * ss.norm.sf(abs(r.statistic)) == pytest.approx(raw.loc[r.group_a, r.group_b], rel=1e-9)
        assert -1 <= r.effect_size <= 1
    assert dunn.iloc[2]["p_value"] < 0.05  # torch-cpu (median 100) vs torch-cuda (median 5)


def test_one_non_normal_group_switches_to_kruskal():
    rng = np.random.default_rng(3)
    normal = ss.norm.ppf((np.arange(1, 21) - 0.5) / 20)  # textbook-normal sample (normal quantiles)
    groups = {"torch-cpu": 50 + 2 * normal, "onnx-cpu": 40 + 2 * normal[::-1],
              "ov-cpu": np.r_[np.full(17, 30.0) + rng.normal(0, 0.1, 17), 60.0, 70.0, 90.0]}
    df = rows(groups)
    assert df.loc[df["test"] == "shapiro", "p_value"].iloc[2] < 0.05
    assert "kruskal" in set(df["test"]) and "welch_anova" not in set(df["test"])
    assert df.loc[df["test"] == "kruskal", "reason"].iloc[0] == "not normal: ov-cpu"


def test_too_few_runs_and_zero_variance_do_not_crash():
    rng = np.random.default_rng(4)
    groups = {"torch-cpu": rng.normal(10, 1, 10), "onnx-cpu": [5.0, 6.0], "ov-cpu": np.full(10, 3.0),
              "torch-cuda": rng.normal(1, 0.1, 10)}
    df = rows(groups)
    sh = df[df["test"] == "shapiro"].set_index("group_a")
    assert np.isnan(sh.loc["onnx-cpu", "p_value"]) and "n=2 < 3" in sh.loc["onnx-cpu", "reason"]
    assert np.isnan(sh.loc["ov-cpu", "p_value"]) and "zero variance" in sh.loc["ov-cpu", "reason"]
    omni = df[df["test"] == "kruskal"].iloc[0]  # zero variance cannot be shown normal -> non-parametric
    assert omni["p_value"] < 0.05 and "left out: onnx-cpu (n=2)" in omni["reason"]
    pairs = df[df["test"] == "dunn"]
    assert "onnx-cpu" not in set(pairs["group_a"]) | set(pairs["group_b"])
    assert len(pairs) == 3


@pytest.mark.parametrize("groups, test, reason", [
    ({"torch-cpu": [1.0], "onnx-cpu": [2.0]}, "kruskal", "fewer than 2 configurations"),
    ({"torch-cpu": [1.0, 2.0, 3.0], "onnx-cpu": [2.0, 2.0]}, "kruskal", "fewer than 2 configurations"),
    ({"torch-cpu": [4.0] * 5, "onnx-cpu": [4.0] * 5}, "kruskal", "identical"),
    ({"torch-cpu": [4.0, np.nan, 4.0, 5.0], "onnx-cpu": [np.nan] * 3}, "kruskal", "fewer than 2 configurations"),
])
def test_degenerate_groups_give_rows_with_reasons(groups, test, reason):
    df = rows(groups)
    omni = df[df["test"] == test].iloc[0]
    assert np.isnan(omni["p_value"]) and reason in omni["reason"]
    assert df["test"].iloc[0] == "shapiro"


def test_dunn_z_and_cliffs_delta_known_values():
    a, b = np.array([5.0, 6, 7]), np.array([1.0, 2, 3])
    assert cliffs_delta(a, b) == 1.0 and cliffs_delta(b, a) == -1.0
    assert cliffs_delta(a, a) == 0.0
    rng = np.random.default_rng(9)
    x, y = rng.integers(0, 5, 12).astype(float), rng.integers(0, 6, 9).astype(float)  # with ties
    u = ss.mannwhitneyu(x, y).statistic  # reference: Cliff's delta = 2U / (n_x n_y) - 1
    assert cliffs_delta(x, y) == pytest.approx(2 * u / (len(x) * len(y)) - 1)
    z = dunn_z({"a": a, "b": b})[("a", "b")]
    # ranks 4,5,6 vs 1,2,3; var = 6*7/12 = 3.5; z = 3 / sqrt(3.5 * (2/3))
    assert z == pytest.approx(3 / np.sqrt(3.5 * 2 / 3))


def test_run_stats_table_shape_flags_and_summary():
    rng = np.random.default_rng(5)
    recs = []
    for model in ("codeparrot-small", "phi2"):
        for cfg, mean in zip(CONFIGS[:3], (100, 50, 10)):
            for rep in range(1, 11):
                recs.append({"model": model, "config": cfg, "rep": rep, "energy_global_j": rng.normal(mean, 2),
                             "time_s": rng.exponential(5) + (mean if model == "phi2" else 0), "gpu_usage_pct": np.nan})
    runs = pd.DataFrame(recs)
    out = run_stats(runs, alpha=0.05, flags={("phi2", "ov-cpu"): "output_match=90.0%"})
    assert list(out.columns[:8]) == ["model", "variable", "test", "group_a", "group_b", "statistic", "p_value",
                                     "effect_size"]
    assert list(out.columns) == STATS_COLUMNS
    assert set(out["variable"]) == {"energy_global_j", "time_s"}  # gpu_usage_pct: no data, no rows
    assert set(out["model"]) == {"codeparrot-small", "phi2"}
    phi = out[(out["model"] == "phi2") & (out["variable"] == "energy_global_j")]
    assert phi.loc[phi["test"].isin(["welch_anova", "kruskal"]), "flags"].iloc[0] == "ov-cpu:output_match=90.0%"
    pair = phi[(phi["group_a"] == "torch-cpu") & (phi["group_b"] == "onnx-cpu")]
    assert pair["flags"].iloc[0] == ""
    summ = summarise(out)
    e = summ.set_index("variable").loc["energy_global_j"]
    assert e["models_tested"] == 2 and e["significant_models"] == 2



def test_summary_counts_only_models_with_every_configuration():
    rng = np.random.default_rng(11)
    recs = []
    for model, cfgs in (("codeparrot-small", CONFIGS[:3]), ("phi2", CONFIGS[:2])):  # phi2 lacks ov-cpu
        for cfg, mean in zip(cfgs, (100, 50, 10)):
            for rep in range(1, 11):
                recs.append({"model": model, "config": cfg, "rep": rep, "time_s": rng.normal(mean, 2)})
    out = run_stats(pd.DataFrame(recs))
    assert set(out.loc[~out["in_block"], "model"]) == {"phi2"}
    phi = out[(out["model"] == "phi2") & out["test"].isin(["welch_anova", "kruskal"])]
    assert phi["p_value"].iloc[0] < 0.05  # tested, and significant ...
    s = summarise(out).set_index("variable").loc["time_s"]
    assert s["significant_models"] == 1 and s["models_tested"] == 1  # ... but not counted: incomplete block
    assert s["models_left_out"] == "phi2"


def test_measured_vs_estimated_energy_is_refused_not_tested():
    rng = np.random.default_rng(12)
    recs = []
    for model, est in (("codeparrot-small", {"torch-cpu": False, "onnx-cpu": True}),
                       ("phi2", {"torch-cpu": True, "onnx-cpu": True})):
        for cfg, mean in zip(("torch-cpu", "onnx-cpu"), (100, 50)):
            for rep in range(1, 6):
                recs.append({"model": model, "config": cfg, "rep": rep, "energy_cpu_j": rng.normal(mean, 2),
                             "energy_cpu_estimated": est[cfg], "flags": ""})
    out = run_stats(pd.DataFrame(recs), variables=["energy_cpu_j"])
    cp = out[out["model"] == "codeparrot-small"]
    assert list(cp["test"]) == ["refused"] and np.isnan(cp["p_value"].iloc[0])
    assert "measured (torch-cpu)" in cp["reason"].iloc[0] and "estimated (onnx-cpu)" in cp["reason"].iloc[0]
    phi = out[out["model"] == "phi2"]
    assert (phi["provenance"] == "estimated").all() and phi["p_value"].notna().any()
    s = summarise(out).set_index("variable").loc["energy_cpu_j"]
    assert s["models_tested"] == 1 and s["models_not_tested"] == 1 and "refused" in s["not_tested_reason"]
