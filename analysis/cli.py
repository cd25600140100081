"""``python -m analysis``: run folders (or a table) -> tables, tests, figures and a report."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from analysis import hardware as H
from analysis import provenance as P
from analysis import selection as S
from analysis import tables as T
from analysis.catalog import RUN_COLUMNS
from analysis.progress import say

DESCRIPTION = """\
Analyse wattserve runs: per-run table, medians, the study's aggregated tables, savings between
configurations, statistical tests, figures and a report (report.md / report.html).

Reads every run folder under RESULTS whose run.json has status "complete" (others are listed in the
report as left out), or a CSV table of runs measured elsewhere (--table), or both together; then takes
the runs that --study/--model/--config/--runs select (all when none is given) and prints what it took.

Energy is labelled measured or estimated (no RAPL: an estimate) in every table, sentence and figure;
a median, mean, saving or test that would mix measured and estimated energy is refused, with the
reason. Configurations are compared over the models they all share (complete blocks); the report
lists the models left out of each comparison.
"""

EPILOG = """\
outputs (in OUT, default RESULTS/report/):
  runs.csv        one row per run (written first); empty cell = not measured
  medians.csv     median over repetitions per model x configuration; <var>_provenance beside each
                  energy column (measured | estimated | mixed = refused | missing);
                  <var>_ci_low/_ci_high: 95 % bootstrap CI of the median (scipy, percentile
                  method, seeded; none under 3 runs)
  aggregated.csv  mean of medians per size category x configuration (the study's Tables 4-5) over the
                  category's complete block (models, left_out), <var>_provenance, refused
  savings.csv     relative energy/time savings between configurations, per model and per category;
                  provenance, refused (measured vs estimated, negative energy above idle)
  stats.csv       Shapiro-Wilk, Levene, Welch ANOVA + Games-Howell or Kruskal-Wallis + Dunn (Holm);
                  provenance, in_block; test "refused" for measured vs estimated energy
  figures/*.png   box plots per variable; energy vs time per model with the Pareto front;
                  humaneval runs: energy vs pass@1 per model; power time series of one run;
                  figures.json: their texts
  report.md, report.html

a --table CSV needs columns model, config and variables named as in runs.csv (energy_global_j,
time_s, ...); size_category (else looked up from the model), rep and output_match_rate are optional.

selection (comma lists; a value that matches no run, or filters that match nothing together, exit 2
and list what exists):
  --study NAMES    run.json study.name (runs.csv study)
  --model NAMES    registry names, aliases or Hugging Face ids (runs.csv model)
  --config NAMES   <engine>-<provider> (runs.csv config)
  --runs IDS       run ids (runs.csv run_id; a run folder's name)
  --hardware FPS   hardware fingerprints (runs.csv host_fingerprint, run.json host.fingerprint)

hardware: runs measured on different hardware (host fingerprints) are never compared as one sample.
When the runs taken come from several, runs.csv and hardware.csv list them all, report.md says why
the combined comparison is refused, and each fingerprint has its own analysis in hardware-<fp>/.

examples:
  python -m analysis --results results
  python -m analysis --results results --model phi2,tinyllama --config torch-cpu,onnx-cpu
  python -m analysis --table analysis/data/study_medians.csv --out /tmp/study-report
  python -m analysis --results results --timeseries 20261126T101500Z-onnx-cpu-tiny-r1
"""


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m analysis", description=DESCRIPTION, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, metavar="DIR",
                    help="folder holding run folders (searched recursively)")
    ap.add_argument("--table", type=Path, metavar="CSV",
                    help="analyse a per-run (or per-median) table measured elsewhere")
    ap.add_argument("--out", type=Path, metavar="DIR",
                    help="where to write (default: RESULTS/report/, or <table>-report/ next to the table)")
    ap.add_argument("--timeseries", metavar="RUN_ID",
                    help="run whose power time series is plotted (default: the first complete run)")
    ap.add_argument("--study", metavar="NAMES", help="only runs of these studies (comma list)")
    ap.add_argument("--model", metavar="NAMES", help="only runs of these models (comma list)")
    ap.add_argument("--config", metavar="NAMES", help="only runs of these configurations (comma list)")
    ap.add_argument("--runs", metavar="IDS", help="only these run ids (comma list)")
    ap.add_argument("--hardware", metavar="FPS",
                    help="only runs measured on these hardware fingerprints (runs.csv host_fingerprint; comma list)")
    ap.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    ap.add_argument("--jobs", type=int, default=None,
                    help="processes for reading run folders and for the tests (default: number of CPUs)")
    ap.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    ap.add_argument("--quiet", action="store_true", help="no progress display")
    args = ap.parse_args(argv)
    if args.results is None and args.table is None:
        ap.error("give --results DIR (run folders) and/or --table CSV")
    if args.results is not None and not args.results.is_dir():
        ap.error(f"--results {args.results}: not a folder")
    for opt in ("study", "model", "config", "runs", "hardware"):
        if getattr(args, opt) is not None and not S.parse_list(getattr(args, opt)):
            ap.error(f"--{opt}: give at least one name (a comma list)")
    if not 0 < args.alpha < 1:
        ap.error("--alpha must be between 0 and 1")
    if args.out is None:
        args.out = (args.results / "report") if args.results is not None else \
            args.table.with_name(args.table.stem + "-report")
    return args


def _csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    lap = [time.monotonic()]

    def stage(name: str) -> None:
        now = time.monotonic()
        timings[name] = now - lap[0]
        lap[0] = now

    frames, left_out, notes, folders = [], [], {"warnings": []}, {}
    sources = []
    if args.results is not None:
        from analysis.runs import read_results

        say(f"reading run folders under {args.results} ...", args.quiet)
        runs, left_out, notes = read_results(args.results, exclude=out, jobs=args.jobs, quiet=args.quiet)
        folders = notes.pop("folders", {})
        frames.append(runs)
        sources.append(str(args.results))
        stage("reading runs")
        for w in notes.get("warnings", [])[:20]:
            say(f"warning: {w}", args.quiet)
    if args.table is not None:
        try:
            table = T.load_table(args.table)
        except T.TableError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        notes["table_warnings"] = table.attrs.get("warnings", [])
        notes["table_columns"] = table.attrs.get("columns", [])
        for w in notes["table_warnings"]:
            say(f"warning: --table: {w}", args.quiet)
        frames.append(table)
        sources.append(str(args.table))
    frames = [f for f in frames if len(f)]
    runs = pd.concat(frames, ignore_index=True) if len(frames) > 1 else (
        frames[0] if frames else pd.DataFrame(columns=list(RUN_COLUMNS)))
    sel = S.Selection(study=S.parse_list(args.study), model=S.parse_list(args.model),
                      config=S.parse_list(args.config), run_id=S.parse_list(args.runs),
                      host_fingerprint=S.parse_list(args.hardware))
    try:
        runs, left_out, counts = S.apply(runs, left_out, sel)
    except S.SelectionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if len(H.fingerprints(runs)) > 1:
        return _per_hardware(args, runs, left_out, notes, folders, sources, sel, counts, t_start)
    return _analyse(args, out, runs, left_out, notes, folders, sources, sel, counts, t_start, timings, stage)


def _per_hardware(args, runs, left_out, notes, folders, sources, sel, counts, t_start) -> int:
    """Runs from several hardware fingerprints: the combined comparison is refused (analysis/hardware.py);
    runs.csv and hardware.csv list them all, and each fingerprint gets its own analysis."""
    import copy

    out: Path = args.out
    table = H.describe(runs, _manifests(folders))
    written = [_csv(P.mark_negative(runs.copy()), out / "runs.csv"), _csv(table, out / "hardware.csv")]
    (out / "report.md").write_text(H.refusal_text(table))
    written.append(out / "report.md")
    unknown = int(runs[H.COLUMN].isna().sum()) if H.COLUMN in runs else 0
    print(f"runs from {len(table) - (1 if unknown else 0)} hardware fingerprints: not compared with each other; "
          f"one analysis per fingerprint" + (f" ({unknown} run(s) without a fingerprint left out)" if unknown else ""))
    status = 0
    for fp, (sub_runs, sub_lo) in H.split_by_fingerprint(runs, left_out).items():
        sub_out = out / f"hardware-{fp}"
        sub_out.mkdir(parents=True, exist_ok=True)
        sub_args = copy.copy(args)
        sub_args.out = sub_out
        sub_sel = copy.copy(sel)
        sub_sel.host_fingerprint = [fp]
        print(f"\n== hardware {fp} -> {sub_out}")
        taken = set(sub_runs["run_id"].astype(str))
        laps = [time.monotonic()]
        timings: dict[str, float] = {}

        def stage(name: str) -> None:
            now = time.monotonic()
            timings[name] = now - laps[0]
            laps[0] = now

        status = max(status, _analyse(sub_args, sub_out, sub_runs, sub_lo, copy.deepcopy(notes),
                                      {r: f for r, f in folders.items() if r in taken}, sources, sub_sel,
                                      counts, t_start, timings, stage))
    print("\nwrote (the combined comparison refused: several hardware fingerprints):")
    for p in written:
        print(f"  {p}")
    return status


def _analyse(args, out: Path, runs, left_out, notes, folders, sources, sel, counts, t_start, timings, stage) -> int:
    took = S.took_line(runs, left_out, counts)
    print(took + (f" [{sel.describe()}]" if sel.active() else ""))
    if not len(runs):
        print(f"error: nothing to analyse: no complete run under {args.results}"
              + (f" matching {sel.describe()}" if sel.active() else "")
              + (f" ({len(left_out)} run folder(s) left out: "
                 + ", ".join(f"{lo.run_id} [{lo.status}]" for lo in left_out[:10]) + ")" if left_out else ""),
              file=sys.stderr)
        return 1
    taken = set(runs["run_id"].astype(str))
    folders = {r: f for r, f in folders.items() if r in taken}
    runs = P.mark_negative(runs)  # energy above idle below zero is flagged in runs.csv and every table
    written = [_csv(runs, out / "runs.csv")]  # first, so a later failure still leaves the per-run table

    say("computing tables ...", args.quiet)
    med = T.medians(runs)
    agg = T.aggregated(med)
    sav = T.savings(med, agg)
    written += [_csv(med, out / "medians.csv"), _csv(agg, out / "aggregated.csv"), _csv(sav, out / "savings.csv")]
    stage("tables")

    from analysis.stats import run_stats

    flags = {(m, c): f for m, c, f in zip(med["model"], med["config"], med["flags"])}
    stats = run_stats(runs, alpha=args.alpha, flags=flags, quiet=args.quiet, jobs=args.jobs)
    written.append(_csv(stats, out / "stats.csv"))
    stage("statistics")

    figures, ts_rel = [], None
    if not args.no_figures:
        say("drawing figures ...", args.quiet)
        from analysis import figures as F

        figdir = out / "figures"
        figures = [(v, str(p.relative_to(out))) for v, p in F.box_plots(runs, figdir, jobs=args.jobs)]
        from analysis import pareto
        from analysis.report_verdicts import energy_variable

        evar = energy_variable(agg)
        scatter = pareto.scatter(med, evar, figdir) if evar and "time_s" in med else None
        if scatter:
            figures.append(("pareto", str(scatter.relative_to(out))))
        from analysis import solved

        energy_pass = solved.scatter(runs, figdir)  # the humaneval runs' energy against pass@1 (none: no such runs)
        if energy_pass:
            figures.append(("solved", str(energy_pass.relative_to(out))))
        ts_rel = _timeseries(args, folders, figdir, out, notes)
        written += [out / p for _, p in figures] + ([out / ts_rel] if ts_rel else [])
        stage("figures")

    from analysis import report as R

    doc = R.build(runs, med, agg, sav, stats, left_out, notes, figures, ts_rel, source=", ".join(sources),
                  manifests=_manifests(folders),
                  alpha=args.alpha, table_input=args.table is not None,
                  table_only=args.results is None,
                  selection=took + (f" (filters: `{sel.describe()}`)" if sel.active() else ""))
    written += list(R.write(doc, out))
    stage("report")
    print(f"analysed {len(runs)} run(s) ({len(left_out)} left out) in {time.monotonic() - t_start:.1f} s ("
          + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + "); wrote:")
    for p in written:
        print(f"  {p}")
    return 0


def _manifests(folders: dict) -> dict[str, dict]:
    """Each analysed run's run.json (for the report's setup section); one that no longer reads is skipped."""
    out = {}
    for rid, folder in folders.items():
        try:
            out[rid] = json.loads((Path(folder) / "run.json").read_text())
        except (OSError, ValueError):
            continue
    return out


def _timeseries(args, folders: dict, figdir: Path, out: Path, notes: dict) -> str | None:
    if not folders:
        if args.timeseries:
            say(f"warning: --timeseries {args.timeseries}: no run folders were read", args.quiet)
        return None
    with_series = sorted(r for r, f in folders.items() if (Path(f) / "series.csv").is_file())
    if not args.timeseries and not with_series:
        return None  # no run has a sensor series: nothing to draw (the report says no energy was measured)
    rid = args.timeseries or with_series[0]
    if rid not in folders:
        msg = f"--timeseries {rid}: no complete run with that id (e.g. {', '.join(sorted(folders)[:3])})"
        say(f"warning: {msg}", args.quiet)
        notes.setdefault("warnings", []).append(msg)
        return None
    from analysis import figures as F

    folder = Path(folders[rid])
    try:
        path = F.timeseries_plot(folder, json.loads((folder / "run.json").read_text()), figdir)
    except Exception as e:  # a plot must not cost the report
        msg = f"time series of {rid} not drawn: {type(e).__name__}: {e}"
        say(f"warning: {msg}", args.quiet)
        notes.setdefault("warnings", []).append(msg)
        return None
    return str(path.relative_to(out)) if path else None


if __name__ == "__main__":
    sys.exit(main())
