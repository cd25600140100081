"""report.md and report.html: tables, figures, a plain-words verdict per research question, caveats.

``build`` gathers the report as a list of headed sections (analysis/report_content.py); the Jinja2
templates in analysis/templates/ lay the same sections out as Markdown (report.md.j2) and as HTML
(report.html.j2, figures linked relatively), so the two never disagree. The verdicts are in
analysis/report_verdicts.py, the caveats in analysis/report_caveats.py, the tables' provenance words
in analysis/report_tables.py. Energy is labelled measured or estimated wherever it appears, and
measured and estimated figures are never combined or compared: such a number is refused.

Adding a section (as analysis/report_pass.py does for pass@1): write a function that returns a
``Section`` (in a module of its own) and fill it with ``.text()``, ``.items()``, ``.table()``, ``.figure()``
(``.subsection()`` for a heading inside it); then insert it into ``sections`` in ``build`` where it
belongs. The shared templates lay its parts out in both formats; nothing else changes. For a layout
of its own, give ``Section(template="name")`` (and ``data=...``) and write
analysis/templates/sections/name.md.j2 and name.html.j2 (make the folder), which see it as ``section``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import pandas as pd
from markupsafe import Markup, escape

from analysis import intervals as I
from analysis import pareto
from analysis import provenance as P
from analysis.blocks import dedupe
from analysis.catalog import ALL_VARIABLES
from analysis.quantities import TIMING_QUANTILES, TIMINGS
from analysis.report_caveats import POLICY, caveats, provenance_summary
from analysis.report_content import Section
from analysis.report_pass import pass_section
from analysis.report_precision import precision_section
from analysis.report_setup import setup_section
from analysis.report_tables import kinds, kinds_text, prov_table, vlabel
from analysis.report_verdicts import USAGE, energy_variable, rq1, rq2, rq3

TEMPLATES = Path(__file__).with_name("templates")
TITLE = "wattserve report"


@dataclass
class Report:
    title: str
    sections: list[Section] = field(default_factory=list)


# ---------------------------------------------------------------- the sections

def intro(runs, med, stats, left_out, notes, source, table_input, table_only, selection, agg, sav) -> Section:
    """The title, what was analysed and how, and the caveats to read first."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ek = set().union(*(kinds(runs, v) for v in ("energy_global_j", "energy_wall_j", "energy_cpu_j")))
    sec = Section("wattserve - energy" + (f" ({kinds_text(ek)})" if ek else "")
                  + " and time of serving code language models", level=1)
    n_models, n_cfg = runs["model"].nunique(), runs["config"].nunique()
    reps = med["n_runs"] if len(med) else pd.Series([0])
    sec.text(f"Analysed **{len(runs)} runs** ({n_models} models x {n_cfg} configurations, {int(reps.min())}-"
             f"{int(reps.max())} repetitions each) from `{source}`, on {now}. "
             f"{len(left_out)} run folder(s) were left out because they did not complete.")
    if selection:
        sec.text(f"Selection: {selection}")
    sec.text("A configuration is a runtime engine paired with an execution provider (torch-cpu, onnx-cuda, ...). "
             "Each run replays the same prompts once"
             + ("; numbers measured from run folders cover the inference phase only (model loading and idle "
                "windows are outside it)" if not table_only else "; the numbers come from a table and are taken as given")
             + ". Global energy = CPU + GPU energy, as in the study; wall energy (the whole machine at the socket) "
             "is reported separately where a wall meter was present. " + provenance_summary(runs) + " " + POLICY
             + " Configurations are compared over the models they all share (a complete block); the models left "
             "out of each comparison are listed below.")
    loud, other = caveats(runs, med, stats, left_out, notes, table_input, agg=agg, sav=sav)
    sec.warning("Read this first", loud)
    if other:
        sec.subsection("Other caveats", level=3).items(other)
    return sec


def figure_caption(runs: pd.DataFrame, var: str, what: str) -> str:
    return f"{vlabel(var, kinds(runs, var))}: {what}"


def left_out_section(block_notes: list[str]) -> Section | None:
    if not block_notes:
        return None
    return (Section("Left out of comparisons")
            .text("Each comparison uses only the models that have every configuration it compares:")
            .items(dedupe(block_notes)))


#: the per-request timing the report shows per model x configuration (TTFT and ITL, median and p90)
TIMING_VARIABLES = tuple(f"{name}_{stat}_s" for name in TIMINGS for stat in TIMING_QUANTILES)


def timing_table(med: pd.DataFrame) -> pd.DataFrame | None:
    """TTFT and ITL (median, p90) per model x configuration, in milliseconds; None without any."""
    cols = [v for v in TIMING_VARIABLES if v in med and pd.to_numeric(med[v], errors="coerce").notna().any()]
    if not cols:
        return None
    sub = med[med[cols].apply(pd.to_numeric, errors="coerce").notna().any(axis=1)]
    out = sub[["size_category", "model", "config"]].copy()
    out["size_category"] = [("?" if pd.isna(c) else str(int(c))) for c in out["size_category"]]
    for var in cols:
        ms = pd.to_numeric(sub[var], errors="coerce") * 1e3
        out[ALL_VARIABLES[var].replace(" [s]", " [ms]")] = ["" if pd.isna(v) else f"{v:.3g}" for v in ms]
    return out.reset_index(drop=True)


def medians_section(med: pd.DataFrame) -> Section:
    sec = Section("Per-model medians")
    for var in [v for v in ("energy_global_j", "energy_wall_j", "time_s", "energy_per_token_j") if v in med]:
        w, kt = prov_table(med, ["size_category", "model"], var)
        has_ci = I.low_column(var) in med and pd.to_numeric(med[I.low_column(var)], errors="coerce").notna().any()
        sec.table(w, f"Median over repetitions: {ALL_VARIABLES.get(var, var)}" + (f", {kt}" if kt else "")
                  + ("; cells marked (estimated) are estimates" if kt and kt != "measured"
                     and kt != "estimated" else "")
                  + (f"; [low, high]: {I.DESCRIPTION}" if has_ci else ""))
    sec.table(timing_table(med), "Per-request timing, median over repetitions of each run's median and p90 "
              "[ms]: TTFT from a request's send to its first token, ITL its decode time / (generated tokens - 1) "
              "(analysis/quantities.py)")
    if "output_match_rate" in med and med["output_match_rate"].notna().any():
        w, _ = prov_table(med, ["size_category", "model"], "output_match_rate")
        sec.table(w, "Output equivalence: share of prompts whose generated token ids equal the torch reference "
                     "of the same provider (torch-cpu for *-cpu, torch-cuda for *-cuda)")
    flagged = med[med["flags"].astype(str).str.len() > 0][["model", "config", "n_runs", "flags"]]
    sec.table(flagged, "Flagged model x configuration groups (flags appear in every CSV table)")
    return sec


def more_figures_section(runs, figures, shown: set[str], timeseries: str | None) -> Section | None:
    rest = [(v, p) for v, p in figures if v not in shown]
    if not rest and not timeseries:
        return None
    sec = Section("More figures")
    for var, path in rest:
        sec.figure(path, figure_caption(runs, var, "by size category and configuration"
                                        + (" (hatched boxes: estimated energy)" if P.is_energy(var) else "")))
    if timeseries:
        sec.figure(timeseries, "Power per source of one run over time, protocol phases shaded "
                               "(dashed lines and sources marked ESTIMATED are estimated, not measured)")
    return sec


def runs_left_out_section(left_out: list) -> Section | None:
    if not left_out:
        return None
    return Section("Runs left out").table(
        pd.DataFrame([{"run": lo.run_id, "status": lo.status, "reason": lo.reason} for lo in left_out]))


FILES = [
    "`runs.csv` - one row per run: every variable, energy sources and whether estimated, flags "
    "(empty = not measured).",
    "`medians.csv` - median over repetitions per model x configuration; `<variable>_provenance` beside each "
    "energy variable (measured, estimated, or mixed = refused); `<variable>_ci_low`/`_ci_high`: the "
    f"{I.DESCRIPTION}.",
    "`aggregated.csv` - mean of the medians per size category x configuration over the category's complete "
    "block (`models`; `left_out`), `<variable>_provenance`, `refused`.",
    "`savings.csv` - saving_pct = (baseline - value) / baseline x 100 for every ordered pair of configurations, "
    "per model and per size category; `provenance` (measured or estimated energy) and `refused`.",
    "`stats.csv` - one row per test: model, variable, test, group_a, group_b, statistic, p_value, effect_size, "
    "provenance (measured or estimated energy), in_block, reason, flags.",
    "`figures/` - the PNG figures; `figures/figures.json` their titles and legends.",
]


# ---------------------------------------------------------------- the report

def build(runs: pd.DataFrame, med: pd.DataFrame, agg: pd.DataFrame, sav: pd.DataFrame, stats: pd.DataFrame,
          left_out: list, notes: dict, figures: list[tuple[str, str]], timeseries: str | None,
          source: str, alpha: float = 0.05, table_input: bool = False, table_only: bool = False,
          selection: str = "", manifests: dict[str, dict] | None = None) -> Report:
    """The report's sections, in reading order (see the module docstring to add one)."""
    runs = P.with_provenance(runs)
    evar = energy_variable(agg)
    rq1_sec, notes1 = rq1(med, agg, sav, evar, stats, alpha)
    for var, path in figures:
        if var in (evar, "time_s"):
            rq1_sec.figure(path, figure_caption(
                runs, var, "one box per model (colour) and configuration, over repetitions, by size category"
                + (" (hatched boxes: estimated energy)" if P.is_energy(var) else "")))
    if evar and "time_s" in med:
        front = pareto.sentences(med, evar)
        if front:
            rq1_sec.text("Energy against time, per model: a configuration is on the Pareto front when no other "
                         "needs less energy and less time (fronts are found within one kind of energy, measured "
                         "or estimated):").items(front)
        for var, path in figures:
            if var == "pareto":
                rq1_sec.figure(path, f"{vlabel(evar, kinds(runs, evar))} against inference time, median per model "
                                     "and configuration with bootstrap intervals; filled points joined: the Pareto "
                                     "front" + (" (triangles: estimated energy)" if P.ESTIMATED in kinds(runs, evar)
                                                else ""))
    rq2_sec, notes2 = rq2(med, stats, alpha)
    for var, path in figures:
        if var in USAGE:
            rq2_sec.figure(path, figure_caption(runs, var, "by size category and configuration"))
    rq3_sec, notes3 = rq3(stats, alpha)
    sections = [
        intro(runs, med, stats, left_out, notes, source, table_input, table_only, selection, agg, sav),
        rq1_sec, rq2_sec, rq3_sec,
        pass_section(runs, figures),
        precision_section(runs),
        left_out_section(notes1 + notes2 + notes3),
        medians_section(med),
        more_figures_section(runs, figures, {evar, "time_s", "pareto", "solved", *USAGE}, timeseries),
        runs_left_out_section(left_out),
        setup_section(manifests or {}),
        Section("Files").items(FILES),
    ]
    return Report(TITLE, [s for s in sections if s is not None])


# ---------------------------------------------------------------- rendering

def _md_cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _inline(text) -> Markup:
    """Escaped text with **strong** and `code` marks as tags."""
    t = str(escape(text))
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
    return Markup(t)


def _env(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=autoescape,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["md_cell"] = _md_cell
    env.filters["inline"] = _inline
    return env


def render_md(report: Report) -> str:
    text = _env(False).get_template("report.md.j2").render(report=report)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def render_html(report: Report) -> str:
    text = _env(True).get_template("report.html.j2").render(report=report)
    return re.sub(r"\n{2,}", "\n", text).strip() + "\n"


def write(report: Report, out_dir: Path) -> tuple[Path, Path]:
    """report.md and report.html, each written whole (a temporary file renamed), so a crash leaves
    no half-written report."""
    paths = []
    for name, text in (("report.md", render_md(report)), ("report.html", render_html(report))):
        path = out_dir / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
        paths.append(path)
    return paths[0], paths[1]
