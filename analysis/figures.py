"""Figures (PNG, matplotlib Agg): box plots of each dependent variable by size category and
configuration with one colour per model (the study's Figures 3-5), a black bar on each box for the
bootstrap confidence interval of its median (analysis/intervals.py), and the power time series of one
run with its protocol phases shaded.

Energy figures say whether they are measured or estimated: the title and y label name the provenance,
boxes of estimated energy are hatched (and a mixed group - measured and estimated runs - is cross
hatched and labelled refused) with a legend entry saying so. Every figure's title, axis labels and
legend texts are written to ``figures.json`` beside the PNGs, with any that would be cut off
(analysis/figure_texts.py), so what a figure says can be checked without looking at it.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from loadgen.runfolder import read_series  # noqa: E402
from analysis import intervals as I  # noqa: E402
from analysis.figure_texts import figure_texts, legend_columns, record_texts  # noqa: E402,F401
from analysis import provenance as P  # noqa: E402
from analysis.catalog import (DEPENDENT_VARIABLES, SIZE_CATEGORIES, config_sort_key,  # noqa: E402
                              model_sort_key)

PHASE_COLOURS = {"load": "#bbbbbb", "idle_before": "#9ecae1", "inference": "#fdae6b", "idle_after": "#a1d99b"}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_")


def model_colours(models) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab20" if len(models) > 10 else "tab10")
    ordered = sorted(set(models), key=model_sort_key)
    return {m: cmap(i % cmap.N) for i, m in enumerate(ordered)}


def box_plots(runs: pd.DataFrame, out_dir: Path, variables=None, jobs: int | None = 1) -> list[tuple[str, Path]]:
    """One PNG per dependent variable with data; returns (variable, path) pairs. ``jobs`` > 1 draws
    them in parallel processes. Their texts go to ``figures.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [v for v in (variables or DEPENDENT_VARIABLES)
            if v in runs and pd.to_numeric(runs[v], errors="coerce").notna().any()]
    if any(P.is_energy(v) and P.provenance_column(v) not in runs for v in todo):
        runs = P.with_provenance(runs)
    cols = ["model", "size_category", "config", *todo,
            *[P.provenance_column(v) for v in todo if P.provenance_column(v) in runs]]
    data = runs[cols]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
    if jobs == 1:
        done = [_box_plot(data, v, out_dir) for v in todo]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            done = list(pool.map(_box_plot, [data] * len(todo), todo, [out_dir] * len(todo)))
    record_texts(out_dir, {p.name: t for p, t in done})
    return list(zip(todo, [p for p, _ in done]))


HATCH = {P.ESTIMATED: "///", P.MIXED: "xx"}


def _box_plot(runs: pd.DataFrame, var: str, out_dir: Path) -> tuple[Path, dict]:
    colours = model_colours(runs["model"].dropna().unique())
    cats = sorted(runs["size_category"].dropna().unique()) or [np.nan]
    if runs["size_category"].isna().any() and cats != [np.nan]:
        cats = cats + [np.nan]
    y = pd.to_numeric(runs[var], errors="coerce")
    data = runs.assign(_y=y).dropna(subset=["_y"])
    configs = sorted(data["config"].unique(), key=config_sort_key)
    all_models = sorted(data["model"].unique(), key=model_sort_key)
    pcol = P.provenance_column(var)
    prov = {}
    if P.is_energy(var) and pcol in data:
        prov = {k: P.combine(g) for k, g in data.groupby(["model", "config"])[pcol]}
    kinds = set(prov.values()) - {P.MISSING}
    with_ci = False
    fig, axes = plt.subplots(1, len(cats), figsize=(max(5.0, 1.2 * len(configs)) * len(cats) / 1.6, 5.2),
                             squeeze=False, layout="constrained")
    for ax, cat in zip(axes[0], cats):
        sub = data[data["size_category"].isna()] if pd.isna(cat) else data[data["size_category"] == cat]
        models = sorted(sub["model"].unique(), key=model_sort_key)
        width = 0.8 / max(1, len(models))
        for j, model in enumerate(models):
            mine = sub[sub["model"] == model]
            vals, pos, hatches = [], [], []
            for i, cfg in enumerate(configs):
                v = mine.loc[mine["config"] == cfg, "_y"].to_numpy()
                if len(v):
                    vals.append(v)
                    pos.append(i - 0.4 + width * (j + 0.5))
                    hatches.append(HATCH.get(prov.get((model, cfg)), ""))
            if not vals:
                continue
            bp = ax.boxplot(vals, positions=pos, widths=width * 0.85, patch_artist=True, showfliers=True,
                            manage_ticks=False, medianprops={"color": "black", "linewidth": 1},
                            flierprops={"markersize": 3})
            for patch, hatch in zip(bp["boxes"], hatches):
                patch.set_facecolor(colours[model])
                patch.set_alpha(0.85)
                if hatch:
                    patch.set_hatch(hatch)
            for p, v in zip(pos, vals):
                if len(v) < 5:  # a box of one or two points is a line: show the points
                    ax.plot([p] * len(v), v, "o", color=colours[model], markersize=3,
                            markeredgecolor="black", markeredgewidth=0.4)
                lo, hi = I.median_ci(v)
                if np.isfinite(lo) and np.isfinite(hi):
                    m = float(np.median(v))
                    ax.errorbar([p + width * 0.22], [m], yerr=[[m - lo], [hi - m]], fmt="D", color="black",
                                markersize=3, markerfacecolor="white", elinewidth=2.2, capsize=2.5,
                                capthick=1.4, zorder=5)
                    with_ci = True
        ax.set_xticks(range(len(configs)))
        ax.set_xticklabels(configs, rotation=35, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(configs) - 0.4)
        title = "unknown size" if pd.isna(cat) else f"Size category {int(cat)} ({SIZE_CATEGORIES.get(int(cat), '')})"
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    name = DEPENDENT_VARIABLES.get(var, var)
    if kinds == {P.MEASURED}:
        said, ylab = " - measured", f"{name}, measured"
    elif kinds == {P.ESTIMATED}:
        said, ylab = " - ESTIMATED energy (no meter: a model, not a measurement)", f"{name}, ESTIMATED"
    elif kinds:
        said, ylab = (" - measured and estimated (hatched = estimated; never compared)",
                      f"{name}, measured or estimated (hatched)")
    else:
        said, ylab = "", name
    axes[0][0].set_ylabel(ylab)
    title = f"{name} by configuration (box = repetitions of one model){said}"
    width_chars = int(fig.get_figwidth() * 72 / 6)  # about 6 points per character at 10 pt
    fig.suptitle(textwrap.fill(title, max(30, width_chars)), fontsize=10)  # a narrow figure wraps it
    handles = [Patch(facecolor=colours[m], label=m) for m in all_models]
    if with_ci:
        handles.append(Line2D([], [], color="black", linewidth=2.2, marker="D", markersize=3, markerfacecolor="white",
                              label=f"{I.LEVEL:.0%} bootstrap CI of the median".replace("%", " %")))
    if P.ESTIMATED in kinds:
        handles.append(Patch(facecolor="white", edgecolor="black", hatch=HATCH[P.ESTIMATED], label="estimated energy"))
    if P.MIXED in kinds:
        handles.append(Patch(facecolor="white", edgecolor="black", hatch=HATCH[P.MIXED],
                             label="measured + estimated runs (median refused)"))
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", frameon=False,
               ncol=legend_columns(fig, [h.get_label() for h in handles], 7))
    path = out_dir / f"box_{var}.png"
    texts = figure_texts(fig)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, texts


def _labels(value) -> dict:
    if isinstance(value, dict):
        return value
    try:
        return json.loads(value) if isinstance(value, str) and value else {}
    except ValueError:
        return {}


def power_series(series: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Power (W) per source over time: counters ``*_joules_total`` differentiated (resets and wraps
    dropped), ``*_watts`` gauges as they are. Keyed by a readable label."""
    out: dict[str, pd.DataFrame] = {}
    metric = series["metric"].astype(str)
    sel = series[metric.str.endswith("_joules_total") | metric.str.endswith("_watts")
                 | (metric == "DCGM_FI_DEV_POWER_USAGE")]
    if sel.empty:
        return out
    sel = sel.assign(_key=sel["labels"].map(lambda l: json.dumps(_labels(l), sort_keys=True)))
    for (sensor, name, key), g in sel.groupby(["sensor", "metric", "_key"], sort=True):
        lab = json.loads(key)
        g = g.sort_values("t")
        t, v = g["t"].to_numpy(dtype=float), g["value"].to_numpy(dtype=float)
        if name.endswith("_joules_total"):
            if len(t) < 2:
                continue
            dt, dv = np.diff(t), np.diff(v)
            ok = (dt > 0) & (dv >= 0)
            t, v = t[1:][ok], (dv[ok] / dt[ok])
        what = lab.get("domain") or ("gpu" if name.startswith("DCGM_") else
                                     re.sub(r"^wattserve_|_(joules_total|watts)$", "", name))
        extra = [x for x in (lab.get("device"), lab.get("source") or sensor) if x]
        if str(lab.get("estimated", "")).lower() == "true":
            extra.append("ESTIMATED")
        label = f"{what} ({', '.join(extra)})" if extra else what
        out[label] = pd.DataFrame({"t": t, "watts": v})
    return out


def timeseries_plot(run_dir: Path, manifest: dict, out_dir: Path) -> Path | None:
    """Power per source (top) and CPU/GPU utilization (bottom) of one run, phases shaded."""
    from analysis import energy as E

    series = read_series(run_dir)
    if series is None or len(series) == 0:
        return None
    phases = manifest.get("phases") or {}
    starts = [p.get("start") for p in phases.values() if isinstance(p, dict) and p.get("start") is not None]
    t0 = min(starts) if starts else float(series["t"].min())
    power = power_series(series)
    util = series[series["metric"].astype(str).str.endswith("_utilization_ratio")]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True, height_ratios=[2, 1],
                                   layout="constrained")
    for label, df in power.items():
        ax1.plot(df["t"] - t0, df["watts"], linewidth=1, label=label,
                 linestyle="--" if "ESTIMATED" in label else "-")
    for name, g in util.groupby("metric", sort=True):
        g = g.groupby("t", as_index=False)["value"].mean().sort_values("t")  # mean over devices/cores
        ax2.plot(g["t"] - t0, 100 * g["value"], linewidth=1,
                 label=re.sub(r"^wattserve_|_utilization_ratio$", "", str(name)))
    for ax in (ax1, ax2):
        for name, ph in phases.items():
            if isinstance(ph, dict) and ph.get("start") is not None and ph.get("end") is not None:
                ax.axvspan(ph["start"] - t0, ph["end"] - t0, color=PHASE_COLOURS.get(name, "#eeeeee"), alpha=0.35,
                           label=name if ax is ax1 else None, linewidth=0)
        ax.grid(alpha=0.3)
    ax1.set_ylabel("Power [W]")
    ax2.set_ylabel("Utilization [%]")
    ax2.set_xlabel("Time since the run started [s]")
    ax1.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    if len(util):
        ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    rid = manifest.get("run_id") or run_dir.name
    est = [label.split(" (")[0] for label in power if "ESTIMATED" in label]
    said = (f"ESTIMATED (not measured): {', '.join(dict.fromkeys(est))} (dashed)" if est
            else "every source measured")
    title = f"Run {rid}: power per source, {said}; phases shaded"
    ax1.set_title(textwrap.fill(title, int(fig.get_figwidth() * 0.7 * 72 / 6)), fontsize=10)  # the axes' width
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"timeseries_{_slug(rid)}.png"
    texts = figure_texts(fig)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    record_texts(out_dir, {path.name: texts})
    return path
