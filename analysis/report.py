"""report.md and report.html: tables, figures, a plain-words verdict per research question, caveats.

The report is built once as a list of blocks and rendered twice (Markdown and self-contained HTML
with the figures linked relatively), so the two never disagree.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.catalog import ALL_VARIABLES, DEPENDENT_VARIABLES, SIZE_CATEGORIES, config_sort_key
from analysis.stats import EFFECT_SIZES, summarise
from analysis.tables import FULL_MATCH, split_flags, wide


# ---------------------------------------------------------------- document model

@dataclass
class Doc:
    blocks: list[tuple] = field(default_factory=list)

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def items(self, items: list[str]):
        if items:
            self.blocks.append(("ul", items))

    def warn(self, items: list[str], title: str):
        if items:
            self.blocks.append(("warn", title, items))

    def table(self, df: pd.DataFrame, caption: str = ""):
        if df is not None and len(df):
            self.blocks.append(("table", df, caption))

    def img(self, path: str, caption: str):
        self.blocks.append(("img", path, caption))


def _md_inline(text: str) -> str:
    return text


def _html_inline(text: str) -> str:
    t = html.escape(text, quote=False)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
    return t


def _md_cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def render_md(doc: Doc) -> str:
    out: list[str] = []
    for b in doc.blocks:
        kind = b[0]
        if kind == "h":
            out += ["#" * b[1] + " " + b[2], ""]
        elif kind == "p":
            out += [b[1], ""]
        elif kind == "ul":
            out += [f"- {i}" for i in b[1]] + [""]
        elif kind == "warn":
            out += [f"> **{b[1]}**", ">"] + [f"> - {i}" for i in b[2]] + [""]
        elif kind == "table":
            df, cap = b[1], b[2]
            if cap:
                out += [f"*{cap}*", ""]
            cols = [str(c) for c in df.columns]
            out.append("| " + " | ".join(_md_cell(c) for c in cols) + " |")
            out.append("|" + "|".join("---" for _ in cols) + "|")
            for row in df.itertuples(index=False):
                out.append("| " + " | ".join(_md_cell(v) for v in row) + " |")
            out.append("")
        elif kind == "img":
            out += [f"![{b[2]}]({b[1]})", "", f"*{b[2]}*", ""]
    return "\n".join(out).rstrip() + "\n"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
.warn{border:2px solid #d9822b;background:#fff4e5;padding:.6em 1em;margin:1em 0;border-radius:4px}
.warn h3{margin:.2em 0 .4em;color:#a24d00}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.88em;color:#555}
caption{caption-side:top;text-align:left;font-style:italic;color:#555;padding-bottom:.3em}
code{background:#f4f4f4;padding:0 .2em}
"""


def render_html(doc: Doc, title: str) -> str:
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{CSS}</style></head><body>"]
    for b in doc.blocks:
        kind = b[0]
        if kind == "h":
            out.append(f"<h{b[1]}>{_html_inline(b[2])}</h{b[1]}>")
        elif kind == "p":
            out.append(f"<p>{_html_inline(b[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "warn":
            out.append(f"<div class='warn'><h3>{_html_inline(b[1])}</h3><ul>"
                       + "".join(f"<li>{_html_inline(i)}</li>" for i in b[2]) + "</ul></div>")
        elif kind == "table":
            df, cap = b[1], b[2]
            rows = ["<table>"]
            if cap:
                rows.append(f"<caption>{html.escape(cap)}</caption>")
            rows.append("<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns) + "</tr>")
            for row in df.itertuples(index=False):
                rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
            rows.append("</table>")
            out.append("".join(rows))
        elif kind == "img":
            out.append(f"<figure><img src='{html.escape(b[1])}' alt='{html.escape(b[2])}'>"
                       f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- formatting

def fmt(v, var: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, str):
        return v
    v = float(v)
    if var in ("output_match_rate", "idle_share"):
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


def _wide_table(frame: pd.DataFrame, index: list[str], var: str) -> pd.DataFrame:
    w = wide(frame, index, var)
    if w.empty:
        return w
    w = w.reset_index()
    if "size_category" in w:
        w["size_category"] = [("?" if pd.isna(c) else str(int(c))) for c in w["size_category"]]
    idx = [c for c in index]
    return pd.concat([w[idx], pretty(w.drop(columns=idx), lambda c: var)], axis=1)


# ---------------------------------------------------------------- verdicts

def energy_variable(agg: pd.DataFrame) -> str | None:
    for var in ("energy_global_j", "energy_wall_j", "energy_cpu_j"):
        if var in agg and pd.to_numeric(agg[var], errors="coerce").notna().any():
            return var
    return None


def _best(sub: pd.DataFrame, var: str) -> tuple[str, float] | None:
    s = pd.to_numeric(sub.set_index("config")[var], errors="coerce").dropna()
    if s.empty:
        return None
    return s.idxmin(), float(s.min())


def rq1(doc: Doc, med: pd.DataFrame, agg: pd.DataFrame, sav: pd.DataFrame, evar: str | None):
    doc.h(2, "RQ1 - Which engine and provider needs the least energy and time?")
    if evar is None:
        doc.p("No energy was measured in any run, so only time can be compared.")
    label = {"energy_global_j": "global energy (CPU + GPU)", "energy_wall_j": "wall energy",
             "energy_cpu_j": "CPU energy"}.get(evar or "", "")
    items = []
    for cat, sub in agg.groupby("size_category", dropna=False, sort=True):
        parts = []
        for var, what in ((evar, label), ("time_s", "time")):
            if var is None or var not in sub:
                continue
            best = _best(sub, var)
            if best is None:
                continue
            cfg, val = best
            unit = "J" if var.endswith("_j") else "s"
            text = f"**{cfg}** needed the least {what} (mean of model medians {fmt(val, var)} {unit})"
            ref = sav[(sav["level"] == "category") & (sav["variable"] == var) & (sav["config"] == cfg)
                      & (sav["baseline"] == "torch-cpu") & _same_cat(sav, cat)]
            if len(ref):
                text += f", {fmt(ref['saving_pct'].iloc[0], 'pct')} % less than torch-cpu"
            best_flags = str(sub.loc[sub["config"] == cfg, "flags"].iloc[0] or "")
            if "output_match" in best_flags:
                text += " (but its outputs differ from the torch reference for some models: see the flags)"
            cpu = sub[sub["config"].str.endswith("-cpu")]
            cpu_best = _best(cpu, var) if len(cpu) else None
            if cpu_best and cpu_best[0] != cfg:
                text += f"; among CPU-only configurations {cpu_best[0]} ({fmt(cpu_best[1], var)})"
            parts.append(text)
        n = int(sub["n_models"].max()) if "n_models" in sub else 0
        if parts:
            items.append(f"Size {cat_name(cat)}, {n} model(s): " + "; ".join(parts) + ".")
    doc.items(items)
    if evar:
        wins = []
        for model, sub in med.groupby("model", sort=False):
            b = _best(sub, evar)
            if b:
                wins.append(b[0])
        if wins:
            counts = pd.Series(wins).value_counts()
            doc.p("Per model, the configuration with the lowest median " + label + ": "
                  + ", ".join(f"{c} for {k} of {len(wins)} models" for c, k in counts.items()) + ".")
        doc.table(_wide_table(agg, ["size_category"], evar),
                  f"Mean of median {label} [J] per size category and configuration (the study's Table 4/5 layout)")
    doc.table(_wide_table(agg, ["size_category"], "time_s"),
              "Mean of median inference time [s] per size category and configuration")
    if len(sav):
        vs = sav[(sav["level"] == "category") & (sav["baseline"] == "torch-cpu")
                 & sav["variable"].isin([v for v in (evar, "time_s") if v])]
        if len(vs):
            t = vs.pivot_table(index=["size_category", "config"], columns="variable", values="saving_pct",
                               aggfunc="first").reset_index()
            t = t.sort_values(["size_category", "config"],
                              key=lambda s: s.map(config_sort_key) if s.name == "config" else s)
            t["size_category"] = [("?" if pd.isna(c) else str(int(c))) for c in t["size_category"]]
            t.columns.name = None
            t = t.rename(columns={evar: f"energy saving vs torch-cpu [%] ({evar})",
                                  "time_s": "time saving vs torch-cpu [%]"})
            doc.table(pretty(t, lambda c: "pct" if "saving" in c else c),
                      "Savings against torch-cpu (positive = less than torch-cpu); all pairs in savings.csv")


def _same_cat(frame: pd.DataFrame, cat) -> pd.Series:
    return frame["size_category"].isna() if pd.isna(cat) else frame["size_category"] == cat


USAGE = ("cpu_usage_pct", "ram_usage_pct", "gpu_usage_pct", "gpu_mem_util_pct", "gpu_mem_used_pct")


def rq2(doc: Doc, med: pd.DataFrame):
    doc.h(2, "RQ2 - How much CPU, RAM and GPU does each configuration use?")
    present = [v for v in USAGE if v in med and pd.to_numeric(med[v], errors="coerce").notna().any()]
    if not present:
        doc.p("No CPU, RAM or GPU utilization was recorded.")
        return
    by_cfg = med.groupby("config")[present].mean()
    by_cfg = by_cfg.loc[sorted(by_cfg.index, key=config_sort_key)]
    items = []
    names = {"cpu_usage_pct": "CPU usage", "ram_usage_pct": "RAM usage", "gpu_usage_pct": "GPU usage",
             "gpu_mem_util_pct": "GPU memory utilization", "gpu_mem_used_pct": "GPU memory used"}
    for v in present:
        s = by_cfg[v].dropna()
        if s.empty:
            continue
        hi, lo = s.idxmax(), s.idxmin()
        if np.isclose(s[hi], s[lo], rtol=1e-6, atol=1e-9):
            items.append(f"{names[v]}: the same for every configuration ({fmt(s[hi], v)} %).")
            continue
        items.append(f"{names[v]}: highest with **{hi}** ({fmt(s[hi], v)} %), "
                     f"lowest with **{lo}** ({fmt(s[lo], v)} %), "
                     f"mean over models of the per-model medians.")
    missing = [names[v] for v in USAGE if v not in present]
    if missing:
        items.append("Not recorded: " + ", ".join(missing) + ".")
    doc.items(items)
    t = by_cfg.reset_index()
    t = pd.concat([t[["config"]], pretty(t[present], lambda c: c)], axis=1)
    t = t.rename(columns={v: names[v] + " [%]" for v in present})
    doc.table(t, "Resource use per configuration (mean over models of the median over repetitions)")


def rq3(doc: Doc, stats: pd.DataFrame, alpha: float):
    doc.h(2, "RQ3 - Are the differences statistically significant?")
    if stats is None or stats.empty:
        doc.p("No tests were run (no variable had data).")
        return
    summ = summarise(stats, alpha)
    items = []
    for r in summ.itertuples(index=False):
        name = DEPENDENT_VARIABLES.get(r.variable, r.variable)
        if r.models_tested == 0:
            items.append(f"{name}: not tested for any model ({r.not_tested_reason}).")
            continue
        text = (f"{name}: the configurations differ significantly (p <= {alpha}) for **{r.significant_models} of "
                f"{r.models_tested}** tested models (Welch ANOVA for {r.welch_anova}, Kruskal-Wallis for {r.kruskal})")
        if r.pairs_compared:
            text += f"; in those models {r.significant_pairs} of {r.pairs_compared} configuration pairs differ"
        if r.models_not_tested:
            text += f"; {r.models_not_tested} model(s) not tested ({r.not_tested_reason})"
        items.append(text + ".")
    doc.items(items)
    doc.p("Which test: Shapiro-Wilk per configuration; if every configuration looks normal (p > "
          f"{alpha}) Welch's ANOVA and Games-Howell pairs, otherwise Kruskal-Wallis and Dunn pairs with Holm "
          "adjustment. Effect sizes: " + "; ".join(f"{k}: {v}" for k, v in EFFECT_SIZES.items())
          + ". Every test, with its reason, is in stats.csv.")
    t = summ.copy()
    for c in ("median_effect_size_welch_np2", "median_effect_size_kruskal_e2"):
        t[c] = [fmt(v) for v in t[c]]
    doc.table(t, "Summary of the tests per variable")


# ---------------------------------------------------------------- caveats

def caveats(runs: pd.DataFrame, med: pd.DataFrame, stats: pd.DataFrame, left_out, notes: dict,
            table_input: bool) -> tuple[list[str], list[str]]:
    """(prominent warnings about the numbers themselves, other caveats)."""
    loud, other = [], []
    from_folders = runs[~runs["run_id"].astype(str).str.contains(":", regex=False)] if "run_id" in runs else runs
    no_series = from_folders["flags"].map(lambda f: "no_series_csv" in split_flags(f)) if len(from_folders) else []
    if len(from_folders) and no_series.all():
        loud.append("**No energy was measured**: none of the runs has a sensor series (series.csv), so every energy "
                    "column is empty and only time, requests and output equivalence are compared.")
    elif len(from_folders) and no_series.any():
        loud.append(f"{int(no_series.sum())} run(s) have no sensor series (series.csv): their energy is missing.")
    for dom in ("cpu", "gpu", "wall", "dram"):
        col = f"energy_{dom}_estimated"
        if col in runs:
            est = runs[col].astype(str).str.lower().isin(["true", "1"])
            if est.any():
                srcs = sorted({str(s) for s in runs.loc[est, f"energy_{dom}_source"].dropna()}) or ["?"]
                loud.append(f"**{dom.upper()} energy is ESTIMATED, not measured**, "
                            f"in {int(est.sum())} of {len(runs)} runs "
                            f"(source: {', '.join(srcs)}). Those joules come from a model (e.g. TDP x utilization), "
                            "not from a meter: read them as a proxy, and do not compare them with measured numbers.")
    if "flags" in runs:
        inc = runs["flags"].map(lambda f: [x for x in split_flags(f) if x.startswith(("incomplete:", "missing:"))])
        n = int(inc.map(bool).sum())
        if n:
            kinds = sorted({x for xs in inc for x in xs})
            loud.append(f"Sensors did not cover the whole inference window in {n} run(s) ({', '.join(kinds)}): "
                        "those energies are partial or missing.")
        cpu_only = runs["flags"].map(lambda f: "global=cpu-only" in split_flags(f))
        if cpu_only.any():
            other.append(f"{int(cpu_only.sum())} run(s) had no GPU to measure (run.json lists no GPU on the host, "
                         "or lists none and no GPU sensor ran): their global energy is CPU energy alone.")
        failed = runs["flags"].map(lambda f: any(x.startswith("failed_requests") for x in split_flags(f)))
        if failed.any():
            loud.append(f"{int(failed.sum())} run(s) had failed requests (see the flags column): their per-request "
                        "numbers cover the answered requests only.")
    mism = med[pd.to_numeric(med["output_match_rate"], errors="coerce") < FULL_MATCH]
    if len(mism):
        loud.append("Outputs differ from the torch reference (same provider) for: "
                    + ", ".join(f"{m} {c} ({100 * r:.1f} % of prompts identical)"
                                for m, c, r in zip(mism["model"], mism["config"], mism["output_match_rate"]))
                    + ". Those configurations did not do the same work; they are flagged in every table.")
    if notes.get("no_reference"):
        other.append("Output equivalence not checked (no torch run of the same provider for the model): "
                     + ", ".join(notes["no_reference"]) + ".")
    if notes.get("work_differs"):
        other.append("Output equivalence not checked (prompt set or generation limits differ from the torch "
                     "run's): " + ", ".join(notes["work_differs"]) + ".")
    if left_out:
        counts = pd.Series([lo.status for lo in left_out]).value_counts()
        other.append(f"{len(left_out)} run folder(s) left out (not complete): "
                     + ", ".join(f"{k} {v}" for k, v in counts.items()) + "; listed at the end.")
    small = med[med["n_runs"] < 3]
    if len(small):
        other.append(f"{len(small)} model x configuration group(s) have fewer than 3 runs: no normality test and no "
                     "comparison for them (stats.csv says so per row).")
    if notes.get("warnings"):
        other.append(f"{len(notes['warnings'])} warning(s) during the analysis; first: {notes['warnings'][0]}")
    for w in notes.get("table_warnings", []):
        other.append(f"Table input: {w}.")
    if table_input:
        other.append("Some or all rows come from a table given with --table: its numbers are taken as given "
                      "(their measurement protocol - e.g. whether model loading was counted - is not known here).")
    return loud, other


# ---------------------------------------------------------------- the report

def build(runs: pd.DataFrame, med: pd.DataFrame, agg: pd.DataFrame, sav: pd.DataFrame, stats: pd.DataFrame,
          left_out: list, notes: dict, figures: list[tuple[str, str]], timeseries: str | None,
          source: str, alpha: float = 0.05, table_input: bool = False, table_only: bool = False) -> Doc:
    doc = Doc()
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc.h(1, "wattserve - energy and time of serving code language models")
    n_models, n_cfg = runs["model"].nunique(), runs["config"].nunique()
    reps = med["n_runs"] if len(med) else pd.Series([0])
    doc.p(f"Analysed **{len(runs)} runs** ({n_models} models x {n_cfg} configurations, {int(reps.min())}-"
          f"{int(reps.max())} repetitions each) from `{source}`, on {now}. "
          f"{len(left_out)} run folder(s) were left out because they did not complete.")
    doc.p("A configuration is a runtime engine paired with an execution provider (torch-cpu, onnx-cuda, ...). "
          "Each run replays the same prompts once"
          + ("; numbers measured from run folders cover the inference phase only (model loading and idle windows "
             "are outside it)" if not table_only else "; the numbers come from a table and are taken as given")
          + ". Global energy = CPU + GPU energy, as in the study; wall energy (the whole machine at the socket) "
          "is reported separately where a wall meter was present.")
    loud, other = caveats(runs, med, stats, left_out, notes, table_input)
    doc.warn(loud, "Read this first")
    if other:
        doc.h(3, "Other caveats")
        doc.items(other)

    evar = energy_variable(agg)
    rq1(doc, med, agg, sav, evar)
    for var, path in figures:
        if var in (evar, "time_s"):
            doc.img(path, f"{DEPENDENT_VARIABLES.get(var, var)}: one box per model (colour) and configuration, "
                          "over repetitions, by size category")
    rq2(doc, med)
    for var, path in figures:
        if var in USAGE:
            doc.img(path, f"{DEPENDENT_VARIABLES.get(var, var)} by size category and configuration")
    rq3(doc, stats, alpha)

    doc.h(2, "Per-model medians")
    for var in [v for v in ("energy_global_j", "energy_wall_j", "time_s", "energy_per_token_j") if v in med]:
        w = _wide_table(med, ["size_category", "model"], var)
        doc.table(w, f"Median over repetitions: {ALL_VARIABLES.get(var, var)}")
    if "output_match_rate" in med and med["output_match_rate"].notna().any():
        doc.table(_wide_table(med, ["size_category", "model"], "output_match_rate"),
                  "Output equivalence: share of prompts whose generated token ids equal the torch reference "
                  "of the same provider (torch-cpu for *-cpu, torch-cuda for *-cuda)")
    flagged = med[med["flags"].astype(str).str.len() > 0][["model", "config", "n_runs", "flags"]]
    doc.table(flagged, "Flagged model x configuration groups (flags appear in every CSV table)")
    other_figs = [(v, p) for v, p in figures if v not in (evar, "time_s") and v not in USAGE]
    if other_figs or timeseries:
        doc.h(2, "More figures")
        for var, path in other_figs:
            doc.img(path, f"{DEPENDENT_VARIABLES.get(var, var)} by size category and configuration")
        if timeseries:
            doc.img(timeseries, "Power per source of one run over time, protocol phases shaded "
                                "(dashed lines are estimated sources)")
    if left_out:
        doc.h(2, "Runs left out")
        doc.table(pd.DataFrame([{"run": lo.run_id, "status": lo.status, "reason": lo.reason} for lo in left_out]))
    doc.h(2, "Files")
    doc.items([
        "`runs.csv` - one row per run: every variable, energy sources and whether estimated, flags "
        "(empty = not measured).",
        "`medians.csv` - median over repetitions per model x configuration.",
        "`aggregated.csv` - mean of the medians per size category x configuration.",
        "`savings.csv` - saving_pct = (baseline - value) / baseline x 100 for every ordered pair of configurations, "
        "per model and per size category.",
        "`stats.csv` - one row per test: model, variable, test, group_a, group_b, statistic, p_value, effect_size, "
        "reason, flags.",
        "`figures/` - the PNG figures.",
    ])
    return doc


def write(doc: Doc, out_dir: Path) -> tuple[Path, Path]:
    md, htm = out_dir / "report.md", out_dir / "report.html"
    md.write_text(render_md(doc))
    htm.write_text(render_html(doc, "wattserve report"))
    return md, htm
