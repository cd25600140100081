"""Energy against time per model, and the configurations nobody beats on both (the Pareto front).

A configuration is on the front when no other configuration of the same model needs at most its
energy and at most its time, and strictly less of one. The front is found within one kind of energy:
measured and estimated medians are never compared, so a model with both kinds gets a front per kind
(a refused median - measured and estimated runs - is left out). The figure is one panel per model:
median time (x) against median energy (y) with their bootstrap intervals, front points filled and
joined, the others hollow; a legend and the title say which energy is estimated.
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
from matplotlib.lines import Line2D  # noqa: E402

from analysis import intervals as I  # noqa: E402
from analysis import provenance as P  # noqa: E402
from analysis.catalog import ALL_VARIABLES, config_sort_key, model_sort_key  # noqa: E402
from analysis.figure_texts import figure_texts, legend_columns, record_texts  # noqa: E402

MARKERS = {P.MEASURED: "o", P.ESTIMATED: "^", "": "o"}


def front(energy, time) -> np.ndarray:
    """True where a point is not dominated (lower-or-equal in both, lower in one) by another."""
    e, t = np.asarray(energy, dtype=float), np.asarray(time, dtype=float)
    keep = np.zeros(len(e), dtype=bool)
    for i in range(len(e)):
        dominated = (e <= e[i]) & (t <= t[i]) & ((e < e[i]) | (t < t[i]))
        keep[i] = not dominated.any()
    return keep


def fronts(med: pd.DataFrame, evar: str, against: str = "time_s", higher_is_better: bool = False) -> pd.DataFrame:
    """Per model and kind of energy: every configuration with both medians (``evar`` and ``against``),
    ``on_front`` marked. Less energy is better; so is less of ``against`` unless ``higher_is_better``
    (pass@1: more problems solved)."""
    pcol = P.provenance_column(evar)
    rows = []
    for model, g in med.groupby("model", sort=False):
        e = pd.to_numeric(g[evar], errors="coerce")
        t = pd.to_numeric(g[against], errors="coerce")
        kind = g[pcol].fillna("").astype(str) if pcol in g else pd.Series("", index=g.index)
        ok = e.notna() & t.notna() & (kind != P.MIXED)
        for k in sorted(set(kind[ok])):
            sel = ok & (kind == k)
            on = front(e[sel], -t[sel] if higher_is_better else t[sel])
            for (_, r), flag in zip(g[sel].iterrows(), on):
                rows.append({"model": model, "config": r["config"], "provenance": k, "energy": float(r[evar]),
                             against: float(r[against]), "on_front": bool(flag)})
    out = pd.DataFrame(rows, columns=["model", "config", "provenance", "energy", against, "on_front"])
    if out.empty:
        return out
    return out.sort_values(["model", "config"], key=lambda s: s.map(model_sort_key if s.name == "model"
                                                                     else config_sort_key)).reset_index(drop=True)


def scatter(med: pd.DataFrame, evar: str, out_dir: Path) -> Path | None:
    """pareto_<evar>_time.png: one panel per model; its texts go to figures.json."""
    pts = fronts(med, evar)
    if pts.empty:
        return None
    models = sorted(pts["model"].unique(), key=model_sort_key)
    ncol = min(3, len(models))
    nrow = math.ceil(len(models) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.6 * nrow + 0.9), squeeze=False,
                             layout="constrained")
    kinds = set(pts["provenance"]) - {""}
    name = ALL_VARIABLES.get(evar, evar)
    ci = med.set_index(["model", "config"])
    with_ci = False
    for ax, model in zip(axes.flat, models):
        mine = pts[pts["model"] == model]
        for kind, g in mine.groupby("provenance", sort=True):
            colour = "#d95f02" if kind == P.ESTIMATED else "#1b9e77"
            for r in g.itertuples(index=False):
                c = ci.loc[(model, r.config)]
                xerr = _err(r.time_s, c.get(I.low_column("time_s")), c.get(I.high_column("time_s")))
                yerr = _err(r.energy, c.get(I.low_column(evar)), c.get(I.high_column(evar)))
                with_ci = with_ci or xerr is not None or yerr is not None
                ax.errorbar([r.time_s], [r.energy], xerr=xerr, yerr=yerr, fmt=MARKERS.get(kind, "o"),
                            color=colour, markerfacecolor=colour if r.on_front else "white", markersize=6,
                            elinewidth=0.8, capsize=2)
                ax.annotate(r.config, (r.time_s, r.energy), textcoords="offset points", xytext=(5, 4), fontsize=7)
            f = g[g["on_front"]].sort_values("time_s")
            if len(f) > 1:
                ax.plot(f["time_s"], f["energy"], "-", color=colour, linewidth=1, alpha=0.7, drawstyle="steps-post")
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("Median inference time [s]", fontsize=8)
        ax.set_ylabel(_ylabel(name, set(mine["provenance"]) - {""}), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.margins(0.15)
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    handles = [Line2D([], [], marker="o", color="#555555", linestyle="-", label="Pareto front (filled): no "
                      "configuration needs less energy and less time"),
               Line2D([], [], marker="o", color="#555555", markerfacecolor="white", linestyle="none",
                      label="dominated (hollow)")]
    if with_ci:
        handles.append(Line2D([], [], color="black", linewidth=0.8,
                              label=f"{I.LEVEL:.0%} bootstrap CIs of the medians".replace("%", " %")))
    for kind in sorted(kinds):
        handles.append(Line2D([], [], marker=MARKERS[kind], linestyle="none",
                              color="#d95f02" if kind == P.ESTIMATED else "#1b9e77",
                              label=f"{kind} energy" + (" (a model, not a meter)" if kind == P.ESTIMATED else "")))
    said = {frozenset({P.MEASURED}): "measured", frozenset({P.ESTIMATED}): "ESTIMATED"}.get(
        frozenset(kinds), "measured or estimated, fronts never mix the two" if kinds else "")
    title = (f"{name.split(' [')[0]}" + (f" ({said})" if said else "")
             + " against time per model, Pareto front marked")
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 72 / 6)), fontsize=10)  # wraps on a narrow figure
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", frameon=False,
               ncol=legend_columns(fig, [h.get_label() for h in handles], 7))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"pareto_{evar}_time.png"
    texts = figure_texts(fig)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    record_texts(out_dir, {path.name: texts})
    return path


def _ylabel(name: str, kinds: set[str]) -> str:
    if kinds == {P.ESTIMATED}:
        return f"Median {name}, ESTIMATED"
    if kinds == {P.MEASURED}:
        return f"Median {name}, measured"
    return f"Median {name}, measured or estimated" if kinds else f"Median {name}"


def _err(v, lo, hi):
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return None
    return [[max(0.0, v - lo)], [max(0.0, hi - v)]]


def sentences(med: pd.DataFrame, evar: str) -> list[str]:
    """'phi2 (estimated global energy): the front is onnx-cpu, ov-cpu; dominated: torch-cpu.' per model."""
    pts = fronts(med, evar)
    name = ALL_VARIABLES.get(evar, evar).split(" [")[0]
    name = name[:1].lower() + name[1:]
    out = []
    for (model, kind), g in pts.groupby(["model", "provenance"], sort=False):
        on, off = list(g.loc[g["on_front"], "config"]), list(g.loc[~g["on_front"], "config"])
        what = f"{kind} {name}".strip()
        text = (f"{model} ({what} vs time): " + ("**" + ", ".join(on) + "**" if len(g) > 1 else on[0] + " alone")
                + (" on the Pareto front" if len(g) > 1 else ", nothing to compare it with"))
        if off:
            text += f"; dominated (another configuration needs no more {what} and no more time): {', '.join(off)}"
        out.append(text + ".")
    return out
