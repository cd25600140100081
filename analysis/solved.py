"""Energy per solved task: what the humaneval runs say about correctness and what it costs.

Per model and configuration, over the runs of the ``humaneval`` workload only (the energy of another
workload's runs is another quantity): the medians over repetitions of pass@1, the run's global energy,
the energy and time per solved task (analysis/quantities.py ``pass_at_1`` and ``per_solved``, computed
per run in analysis/runs.py; the medians by analysis/tables.py ``medians``, so their provenance and
refusals are the same as everywhere), and whether the repetitions agree on pass@1 (greedy decoding:
they should).

The front: a configuration *stands out* when no other configuration of the model is at most as
expensive and at least as correct, and strictly better in one (analysis/pareto.py ``front`` on energy
and minus pass@1), found within one kind of energy (measured or estimated, never mixed). The scatter
draws it: global energy of the 164 problems against pass@1, one panel per model, front points filled.

The published pass@1 (the study's Table 1 and model cards) is the registry's
(services/models/registry.yaml ``published_pass_at_1``: a value with its source, or none with the
reason), read as a data file so the analysis needs none of the serving stack.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from analysis import intervals as I  # noqa: E402
from analysis import provenance as P  # noqa: E402
from analysis.catalog import canonical_model, model_sort_key  # noqa: E402
from analysis.figure_texts import figure_texts, legend_columns, record_texts  # noqa: E402
from analysis.pareto import MARKERS  # noqa: E402
from analysis.pareto import fronts as pareto_fronts  # noqa: E402

WORKLOAD = "humaneval"
REGISTRY = Path(__file__).resolve().parents[1] / "services" / "models" / "registry.yaml"
ENERGY = "energy_global_j"
NON_EQUIVALENCE = "pass_at_1_differs_from_"  # the run flag analysis/runs.py output_match sets
COLOURS = {P.ESTIMATED: "#d95f02", P.MEASURED: "#1b9e77"}


def humaneval_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of the humaneval workload that were scored (pass@1 known)."""
    if "workload" not in runs or "pass_at_1" not in runs:
        return runs.iloc[0:0]
    scored = pd.to_numeric(runs["pass_at_1"], errors="coerce").notna()
    return runs[(runs["workload"].astype(str) == WORKLOAD) & scored]


def per_config(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per model x configuration of the humaneval runs: the medians (analysis/tables.py) of
    pass@1, solved, problems, global energy, energy and time per solved task, with provenance;
    ``pass_min``/``pass_max`` over the repetitions and ``non_equivalent`` (the torch reference it
    differs from, where tokens equal torch's but pass@1 does not)."""
    from analysis.tables import medians

    he = humaneval_runs(runs)
    if he.empty:
        return pd.DataFrame()
    med = medians(he)
    keys = ["model", "config"]
    spread = he.assign(_p=pd.to_numeric(he["pass_at_1"], errors="coerce")).groupby(keys)["_p"].agg(["min", "max"])
    med = med.join(spread.rename(columns={"min": "pass_min", "max": "pass_max"}), on=keys)
    flagged = he.assign(_ne=he["flags"].astype(str).map(_non_equivalent)).groupby(keys)["_ne"].agg(
        lambda s: ", ".join(sorted({x for x in s if x})))
    med = med.join(flagged.rename("non_equivalent"), on=keys)
    return med


def _non_equivalent(flags: str) -> str:
    refs = [f[len(NON_EQUIVALENCE):] for f in flags.split(";") if f.startswith(NON_EQUIVALENCE)]
    return ", ".join(refs)


def fronts(table: pd.DataFrame) -> pd.DataFrame:
    """Per model and kind of energy: every configuration with energy and pass@1, ``on_front`` marked
    (less energy, more problems solved; analysis/pareto.py's front)."""
    return pareto_fronts(table, ENERGY, against="pass_at_1", higher_is_better=True)


def published_pass_at_1(path: Path = REGISTRY) -> dict[str, dict]:
    """{registry name: {"value": ratio or None, "source": where it is published, or why there is none}}."""
    try:
        models = (yaml.safe_load(Path(path).read_text()) or {}).get("models") or {}
    except (OSError, yaml.YAMLError):
        return {}
    out = {}
    for name, entry in models.items():
        pub = (entry or {}).get("published_pass_at_1")
        if isinstance(pub, dict):
            value = pub.get("value")
            out[canonical_model(name)] = {"value": float(value) if value is not None else None,
                                          "source": str(pub.get("source") or "")}
    return out


def scatter(runs: pd.DataFrame, out_dir: Path) -> Path | None:
    """solved_energy_pass_at_1.png: one panel per model, global energy of the workload against pass@1,
    the configurations nothing beats on both filled; its texts go to figures.json."""
    table = per_config(runs)
    pts = fronts(table) if len(table) else pd.DataFrame()
    if pts.empty:
        return None
    models = sorted(pts["model"].unique(), key=model_sort_key)
    ncol = min(3, len(models))
    nrow = math.ceil(len(models) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 3.6 * nrow + 1.0), squeeze=False,
                             layout="constrained")
    kinds = set(pts["provenance"]) - {""}
    ci = table.set_index(["model", "config"])
    with_ci = False
    for ax, model in zip(axes.flat, models):
        mine = pts[pts["model"] == model]
        for kind, g in mine.groupby("provenance", sort=True):
            colour = COLOURS.get(kind, "#555555")
            for r in g.itertuples(index=False):
                c = ci.loc[(model, r.config)]
                lo, hi = c.get(I.low_column(ENERGY)), c.get(I.high_column(ENERGY))
                yerr = None if lo is None or hi is None or pd.isna(lo) or pd.isna(hi) else \
                    [[max(0.0, r.energy - lo)], [max(0.0, hi - r.energy)]]
                with_ci = with_ci or yerr is not None
                ax.errorbar([100 * r.pass_at_1], [r.energy], yerr=yerr, fmt=MARKERS.get(kind, "o"), color=colour,
                            markerfacecolor=colour if r.on_front else "white", markersize=7, elinewidth=0.8,
                            capsize=2)
                ax.annotate(r.config, (100 * r.pass_at_1, r.energy), textcoords="offset points", xytext=(5, 4),
                            fontsize=7)
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("pass@1 [%] (median over repetitions)", fontsize=8)
        ax.set_ylabel(_ylabel(set(mine["provenance"]) - {""}), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.margins(0.2)
        low, high = ax.get_xlim()
        if high - low < 2:  # every configuration solved the same share: give the axis some width
            mid = float(np.mean([low, high]))
            low, high = mid - 2, mid + 2
        ax.set_xlim(max(-0.5, low), min(100.5, high))  # a share: never below 0 % or above 100 %
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    handles = [Line2D([], [], marker="o", color="#555555", linestyle="none",
                      label="filled: nothing cheaper and at least as correct"),
               Line2D([], [], marker="o", color="#555555", markerfacecolor="white", linestyle="none",
                      label="hollow: another is cheaper and at least as correct")]
    if with_ci:
        handles.append(Line2D([], [], color="black", linewidth=0.8,
                              label=f"{I.LEVEL:.0%} bootstrap CI of the energy median".replace("%", " %")))
    for kind in sorted(kinds):
        handles.append(Line2D([], [], marker=MARKERS[kind], linestyle="none", color=COLOURS.get(kind, "#555555"),
                              label=f"{kind} energy" + (" (a model, not a meter)" if kind == P.ESTIMATED else "")))
    said = {frozenset({P.MEASURED}): "measured", frozenset({P.ESTIMATED}): "ESTIMATED"}.get(
        frozenset(kinds), "measured or estimated, never compared" if kinds else "")
    title = ("Global energy of the HumanEval run" + (f" ({said})" if said else "")
             + " against pass@1 per model: the filled configurations are cheaper and at least as correct")
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 72 / 6)), fontsize=10)
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", frameon=False,
               ncol=legend_columns(fig, [h.get_label() for h in handles], 7))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "solved_energy_pass_at_1.png"
    texts = figure_texts(fig)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    record_texts(out_dir, {path.name: texts})
    return path


def _ylabel(kinds: set[str]) -> str:
    if kinds == {P.ESTIMATED}:
        return "Median global energy [J], ESTIMATED"
    if kinds == {P.MEASURED}:
        return "Median global energy [J], measured"
    return "Median global energy [J], measured or estimated" if kinds else "Median global energy [J]"
