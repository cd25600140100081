"""The report's caveats: what a reader must know before trusting a number (estimated energy, missing
sensors, failed requests, negative energy above idle, refused measured-vs-estimated comparisons,
outputs that differ from the torch reference) and the smaller ones (few repetitions, --table input,
runs left out). Returned as sentences; analysis/report.py puts them in the report's opening warning.
"""

from __future__ import annotations

import pandas as pd

from analysis import provenance as P
from analysis.catalog import ALL_VARIABLES
from analysis.report_format import cat_name
from analysis.report_tables import kinds_text
from analysis.tables import FULL_MATCH, split_flags

POLICY = ("Measured and estimated energy are never combined or compared: a median, mean, saving, verdict or "
          "test that would mix them is refused (left empty, with the reason), and every energy figure says "
          "whether it is measured or estimated.")


def provenance_summary(runs: pd.DataFrame) -> str:
    """'Global energy: measured in 3, estimated in 5 of 8 runs.' for the intro."""
    out = []
    for var in ("energy_global_j", "energy_wall_j"):
        if var not in runs or not pd.to_numeric(runs[var], errors="coerce").notna().any():
            continue
        counts = P.run_provenance(runs, var).value_counts()
        parts = [f"{k} in {counts[k]}" for k in (P.MEASURED, P.ESTIMATED, P.MISSING) if counts.get(k, 0)]
        out.append(f"{ALL_VARIABLES[var].split(' [')[0]}: " + ", ".join(parts) + f" of {len(runs)} runs.")
    return " ".join(out)


# ---------------------------------------------------------------- caveats

def refusals(med, agg, sav, stats) -> list[str]:
    """What was refused for mixing measured and estimated energy, in words."""
    out = []
    pcols = [c for c in med.columns if c.endswith("_provenance")]
    mixed_med = [(m, c, col[:-len("_provenance")]) for col in pcols
                 for m, c in zip(med.loc[med[col] == P.MIXED, "model"], med.loc[med[col] == P.MIXED, "config"])]
    if mixed_med:
        out.append(f"{len(mixed_med)} median(s) over repetitions of both kinds ("
                   + ", ".join(f"{m} {c} {v}" for m, c, v in mixed_med[:6]) + (" ..." if len(mixed_med) > 6 else "")
                   + ")")
    apcols = [c for c in agg.columns if c.endswith("_provenance")]
    mixed_agg: dict[tuple, list[str]] = {}
    for col in apcols:
        for cat, c in zip(agg.loc[agg[col] == P.MIXED, "size_category"], agg.loc[agg[col] == P.MIXED, "config"]):
            mixed_agg.setdefault((cat_name(cat), c), []).append(col[:-len("_provenance")])
    if mixed_agg:
        out.append(f"{sum(map(len, mixed_agg.values()))} mean(s) of medians mixing both kinds ("
                   + "; ".join(f"size {k[0]} {k[1]}: {', '.join(v)}" for k, v in list(mixed_agg.items())[:6])
                   + (" ..." if len(mixed_agg) > 6 else "") + ")")
    if sav is not None and len(sav) and "refused" in sav:
        n = int(sav["refused"].fillna("").str.startswith("compares").sum())
        if n:
            out.append(f"{n} saving(s) between a measured and an estimated figure (savings.csv `refused`)")
    if stats is not None and len(stats):
        r = stats[stats["test"] == "refused"]
        if len(r):
            out.append(f"{len(r)} significance test(s) between measured and estimated energy ("
                       + ", ".join(f"{m} {v}" for m, v in zip(r["model"][:6], r["variable"][:6]))
                       + (" ..." if len(r) > 6 else "") + "; stats.csv rows `refused`)")
    return out


def caveats(runs: pd.DataFrame, med: pd.DataFrame, stats: pd.DataFrame, left_out, notes: dict,
            table_input: bool, agg: pd.DataFrame | None = None,
            sav: pd.DataFrame | None = None) -> tuple[list[str], list[str]]:
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
                            "not from a meter: read them as a proxy; every figure built from them (global energy, "
                            "energy per token, energy above idle, savings, tests) is labelled estimated too.")
    if "flags" in runs:
        inc = runs["flags"].map(lambda f: [x for x in split_flags(f) if x.startswith(("incomplete:", "missing:"))])
        n = int(inc.map(bool).sum())
        if n:
            kinds = sorted({x for xs in inc for x in xs})
            loud.append(f"Sensors did not cover the whole inference window in {n} run(s) ({', '.join(kinds)}): "
                        "those energies are partial or missing.")
        cpu_only = runs["flags"].map(lambda f: "global=cpu-only" in split_flags(f))
        if cpu_only.any():
            ks = set(P.run_provenance(runs[cpu_only], "energy_global_j")) - {P.MISSING} \
                if "energy_global_j" in runs else set()
            other.append(f"{int(cpu_only.sum())} run(s) had no GPU to measure (run.json lists no GPU on the host, "
                         "or lists none and no GPU sensor ran): their global energy"
                         + (f" ({kinds_text(ks)})" if ks else "") + " is CPU energy alone.")
        failed = runs["flags"].map(lambda f: any(x.startswith("failed_requests") for x in split_flags(f)))
        if failed.any():
            loud.append(f"{int(failed.sum())} run(s) had failed requests (see the flags column): their per-request "
                        "numbers cover the answered requests only.")
    neg = P.negative_above_idle(runs)
    if len(neg):
        doms = sorted({d for ds in neg["domains"] for d in ds.split(",")})
        ks = set()
        for d in doms:
            var = "dynamic_energy_global_j" if d == "global" else f"dynamic_energy_{d}_j"
            if var in runs:
                ks |= set(P.run_provenance(runs[runs["run_id"].isin(neg["run_id"])], var)) - {P.MISSING}
        loud.append(f"**Energy above idle is negative** ({kinds_text(ks) or 'provenance unknown'}) in {len(neg)} "
                    f"run(s) ({', '.join(doms)}): "
                    + ", ".join(f"{r.run_id} ({r.domains})" for r in neg.head(10).itertuples(index=False))
                    + (" ..." if len(neg) > 10 else "")
                    + ". The idle power exceeds the power during inference there (a drifting or estimated sensor, "
                      "or idle windows unlike the inference's surroundings): those idle-subtracted figures are "
                      "flagged `negative_above_idle` in every table and no saving is computed from them.")
    refused = refusals(med, agg, sav, stats)
    if refused:
        loud.append("**Measured and estimated energy are both present** and were not mixed: refused "
                    + "; ".join(refused) + ".")
    mism = med[pd.to_numeric(med["output_match_rate"], errors="coerce") < FULL_MATCH]
    if len(mism):
        loud.append("Outputs differ from the torch reference (same provider) for: "
                    + ", ".join(f"{m} {c} ({100 * r:.1f} % of prompts identical)"
                                for m, c, r in zip(mism["model"], mism["config"], mism["output_match_rate"]))
                    + ". Those configurations did not do the same work; they are flagged in every table.")
    workloads = sorted({str(w) for w in runs["workload"].dropna()}) if "workload" in runs else []
    if len(workloads) > 1:
        loud.append(f"Runs of {len(workloads)} workloads ({', '.join(workloads)}) are analysed together: the tables, "
                    "tests and verdicts pool them per model and configuration, though they are different work (the "
                    "section on solved tasks uses the humaneval runs alone). Analyse each workload apart "
                    "(--runs, or a results folder per workload).")
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
    if table_input and not any(f"energy_{d}_estimated" in c for c in notes.get("table_columns", [])
                               for d in ("cpu", "gpu", "wall", "dram", "global")):
        other.append("The --table input says nothing about estimated energy (no energy_*_estimated column): its "
                     "energy is taken as measured.")
    if table_input:
        other.append("Some or all rows come from a table given with --table: its numbers are taken as given "
                      "(their measurement protocol - e.g. whether model loading was counted - is not known here).")
    return loud, other
