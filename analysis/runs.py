"""Run folders -> the tidy per-run table (one row per run; see docs/run-folder.md).

Only runs whose ``run.json`` says ``"status": "complete"`` are analysed; every other run folder is
returned as *left out*, with its status, so the report can list it. Energy, idle power and
utilization come from the sampled series through :mod:`analysis.energy` (imported lazily, inside
:func:`read_run`, so the table-level code does not depend on it). Output equivalence compares each
run's generated token ids with the torch run of the same provider family (torch-cpu for ``*-cpu``,
torch-cuda for ``*-cuda``).
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from loadgen.runfolder import read_series
from analysis.catalog import (DEFAULT_PRECISION, RUN_COLUMNS, canonical_model, config_sort_key, model_sort_key,
                              size_category_for, variant_label)
from analysis.hardware import of_manifest as hardware_of
from analysis.progress import progress
from analysis.quantities import (TIMINGS, agreement, fp32_config, pass_at_1, per_solved, per_unit, reference_config,
                                 request_span, request_timing, tokens_per_s)

MARKER_FILES = ("run.json", "requests.csv", "series.csv")
UTILIZATION = {
    "cpu_usage_pct": "wattserve_cpu_utilization_ratio",
    "gpu_usage_pct": "wattserve_gpu_utilization_ratio",
    "gpu_mem_util_pct": "wattserve_gpu_memory_utilization_ratio",
}
USED_OF_TOTAL = {
    "ram_usage_pct": ("wattserve_memory_used_bytes", "wattserve_memory_total_bytes"),
    "gpu_mem_used_pct": ("wattserve_gpu_memory_used_bytes", "wattserve_gpu_memory_total_bytes"),
}
REQUEST_COLUMNS = ["index", "status", "prompt_tokens", "completion_tokens", "latency_s", "token_ids", "start", "end",
                   "energy_j", "prefill_j", "decode_j", "energy_resolved", "ttft_s", "decode_s", "itl_mean_s"]


@dataclass
class LeftOut:
    run_id: str
    path: str
    status: str
    reason: str = ""


@dataclass
class RunRecord:
    """What one run folder yields: its table row and, for output equivalence, its token-id digests."""

    row: dict
    digests: dict[int, bytes | None] = field(default_factory=dict)
    work: str | None = None  # prompt set + generation limits: runs compared for equivalence must share it
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- discovery

def find_run_folders(results: Path, exclude: Path | None = None) -> list[Path]:
    """Every folder under ``results`` that looks like a run (has run.json, requests.csv or series.csv)."""
    results = Path(results)
    exclude = exclude.resolve() if exclude else None
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(results):
        here = Path(dirpath)
        if exclude is not None and here.resolve() == exclude:
            dirnames[:] = []
            continue
        if any(f in filenames for f in MARKER_FILES):
            found.append(here)
            dirnames[:] = []  # a run folder holds no runs
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found)


def read_manifest(folder: Path) -> tuple[dict | None, LeftOut | None]:
    """The run.json of a folder, or why the folder is left out."""
    rid = folder.name
    path = folder / "run.json"
    if not path.is_file():
        return None, LeftOut(rid, str(folder), "no run.json", "crashed or still running (run.json is written last)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, LeftOut(rid, str(folder), "unreadable", f"run.json: {e}")
    rid = manifest.get("run_id") or rid
    status = manifest.get("status") or "unknown"
    if status != "complete":
        return None, LeftOut(rid, str(folder), status, manifest.get("error") or "")
    inf = (manifest.get("phases") or {}).get("inference") or {}
    if not _finite(inf.get("start")) or not _finite(inf.get("end")) or inf["end"] <= inf["start"]:
        return None, LeftOut(rid, str(folder), "complete (unusable)", "no valid inference phase start/end in run.json")
    return manifest, None


def discover(results: Path, exclude: Path | None = None) -> tuple[list[tuple[Path, dict]], list[LeftOut]]:
    usable, left_out = [], []
    for folder in find_run_folders(results, exclude):
        manifest, why = read_manifest(folder)
        if why is not None:
            left_out.append(why)
        else:
            usable.append((folder, manifest))
    return usable, left_out


# ---------------------------------------------------------------- one run

def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _num(x) -> float | None:
    return float(x) if _finite(x) else None


def _digest(token_ids) -> bytes | None:
    if token_ids is None or (isinstance(token_ids, float) and math.isnan(token_ids)):
        return None
    return hashlib.blake2b(" ".join(str(token_ids).split()).encode(), digest_size=8).digest()


def read_requests(folder: Path, row: dict, record: RunRecord) -> tuple[float, float] | None:
    """Request figures into ``row`` (token-id digests into ``record``); returns the requests' span."""
    path = folder / "requests.csv"
    if not path.is_file():
        row["flags"].append("no_requests_csv")
        return None
    head = pd.read_csv(path, nrows=0).columns
    req = pd.read_csv(path, usecols=[c for c in REQUEST_COLUMNS if c in head],
                      dtype={"token_ids": str, "status": str})
    ok = req["status"].eq("ok") if "status" in req else pd.Series(True, index=req.index)
    row["requests"] = len(req)
    row["requests_ok"] = int(ok.sum())
    for col in ("prompt_tokens", "completion_tokens"):
        if col in req:
            row[col] = float(pd.to_numeric(req.loc[ok, col], errors="coerce").sum())
    if "latency_s" in req and ok.any():
        row["latency_median_s"] = float(pd.to_numeric(req.loc[ok, "latency_s"], errors="coerce").median())
    failed = len(req) - row["requests_ok"]
    if failed:
        row["flags"].append(f"failed_requests={failed}")
    if "token_ids" in req:
        idx = req["index"] if "index" in req else pd.Series(range(len(req)))
        for i, tok, good in zip(idx.to_numpy(), req["token_ids"].to_numpy(), ok.to_numpy()):
            record.digests[int(i)] = _digest(tok) if good else None
    timed = [c for c in TIMINGS.values() if c in req]
    if timed and ok.any():  # TTFT / ITL median and p90: analysis/quantities.py request_timing, as the bench's
        answered = req.loc[ok, timed].apply(pd.to_numeric, errors="coerce").assign(status="ok")
        row.update(request_timing(answered.to_dict("records")))
    if "energy_j" in req:  # each request's own energy (loadgen: analysis/quantities.py request_energy)
        per = pd.to_numeric(req.loc[ok, "energy_j"], errors="coerce").dropna()
        row["request_energy_median_j"] = float(per.median()) if len(per) else None
        for col in ("prefill_j", "decode_j"):
            vals = pd.to_numeric(req.loc[ok, col], errors="coerce") if col in req else pd.Series(dtype=float)
            row[f"requests_{col}"] = float(vals.sum()) if vals.notna().any() else None
        resolved = req.loc[ok, "energy_resolved"].astype(str).str.lower() if "energy_resolved" in req else None
        row["requests_resolved_share"] = float((resolved == "true").mean()) if resolved is not None and len(resolved) else None
    if {"start", "end"} <= set(req.columns):
        return request_span(req[["start", "end"]].to_dict("records"))
    return None


def energy_columns(series: pd.DataFrame, manifest: dict, row: dict, window: tuple[float, float]) -> None:
    """The run's energy, idle power and energy above idle (analysis/quantities.py run_energy, the same
    function the bench table uses), then utilization over the same window."""
    from analysis import energy as E
    from analysis.quantities import run_energy, serving_devices, wall_check

    energy = run_energy(series, manifest["phases"], host_gpus=(manifest.get("host") or {}).get("gpus"),
                        devices=serving_devices(manifest), window=window)
    row["flags"] += energy.pop("flags")
    row["energy_notes"] = "; ".join(energy.pop("notes")) or None
    row.update(energy)
    row["wall_rest_j"], wall_flags = wall_check(energy)
    row["flags"] += wall_flags
    t0, t1 = window
    for col, metric in UTILIZATION.items():
        v = _num(E.window_mean(series, metric, t0, t1))
        row[col] = None if v is None else 100.0 * v
    for col, (used, total) in USED_OF_TOTAL.items():
        u, t = _num(E.window_mean(series, used, t0, t1)), _num(E.window_mean(series, total, t0, t1))
        row[col] = 100.0 * u / t if u is not None and t else None


def read_run(folder: Path, manifest: dict | None = None) -> RunRecord:
    """One complete run folder -> its row (and token-id digests). Never raises for bad data: problems
    become flags and warnings on the row."""
    folder = Path(folder)
    if manifest is None:
        manifest, why = read_manifest(folder)
        if why is not None:
            raise ValueError(f"{folder}: {why.status} {why.reason}")
    model = manifest.get("model") or {}
    name = canonical_model(model.get("name") or model.get("source") or "unknown")
    config = str(manifest.get("config") or f"{manifest.get('engine')}-{manifest.get('provider')}")
    engine, _, provider = config.rpartition("-")
    precision = str((manifest.get("generation") or {}).get("precision") or DEFAULT_PRECISION).lower()
    cat = model.get("size_category") or size_category_for(name, model.get("params"))
    phases = manifest["phases"]
    row: dict = {
        "model": name,
        "size_category": cat,
        "config": variant_label(config, precision),  # the grouping key: engine x provider x precision
        "precision": precision,
        "rep": (manifest.get("protocol") or {}).get("rep"),
        "run_id": manifest.get("run_id") or folder.name,
        "engine": manifest.get("engine") or engine,
        "provider": manifest.get("provider") or provider,
        "study": (manifest.get("study") or {}).get("name"),
        "workload": (manifest.get("workload") or {}).get("name") or (manifest.get("prompts") or {}).get("name"),
        "host_fingerprint": hardware_of(manifest),
        "flags": [f"sensor_unavailable:{x.get('name')}" for x in manifest.get("sensors") or []
                  if isinstance(x, dict) and not x.get("available")],
    }
    gen = manifest.get("generation") or {}
    # the work a run did: equal prompts, limits and stop strings (none recorded = none sent)
    work = json.dumps([(manifest.get("prompts") or {}).get("sha256"),
                       *(gen.get(k) for k in ("greedy", "max_length", "max_new_tokens", "ignore_eos")),
                       list(gen.get("stop") or [])])
    record = RunRecord(row=row, work=work)
    span = None
    try:
        span = read_requests(folder, row, record)
        if gen.get("stream"):  # a streamed replay (SSE) carries no token ids: its outputs are not compared
            record.digests = {}
            row["flags"].append("streamed_no_token_ids")
    except Exception as e:  # a damaged requests.csv must not stop the analysis of 839 other runs
        row["flags"].append("requests_unreadable")
        record.warnings.append(f"{row['run_id']}: requests.csv unreadable: {e}")
    # the window is the requests' span (analysis/quantities.py); run.json's inference phase is that span
    # in runs since it was defined so, and the fallback where requests.csv has no timestamps
    window = span or (float(phases["inference"]["start"]), float(phases["inference"]["end"]))
    row["time_s"] = window[1] - window[0]
    row["tokens_per_s"] = tokens_per_s(row.get("completion_tokens"), row["time_s"])
    overhead = manifest.get("harness_overhead") or {}
    row["harness_cpu_s"] = _num(overhead.get("harness_cpu_s"))
    row["harness_share"] = _num(overhead.get("harness_share_of_service"))
    row["harness_energy_cpu_j_estimated"] = _num(overhead.get("harness_energy_cpu_j"))

    if not (folder / "series.csv").is_file():
        row["flags"].append("no_series_csv")
    else:
        try:
            energy_columns(read_series(folder), manifest, row, window)
        except Exception as e:
            row["flags"].append("energy_error")
            record.warnings.append(f"{row['run_id']}: energy/utilization not computed: {type(e).__name__}: {e}")

    row["energy_per_request_j"] = per_unit(row.get("energy_global_j"), row.get("requests_ok"))
    row["energy_per_token_j"] = per_unit(row.get("energy_global_j"), row.get("completion_tokens"))
    solved_columns(manifest, row)
    return record


def solved_columns(manifest: dict, row: dict) -> None:
    """pass@1 and the per-solved-task energy and time of a scored run (the humaneval workload); per
    solved task is undefined (empty, and said in energy_notes) when nothing is solved."""
    scoring = manifest.get("scoring")
    if not scoring:
        return
    if scoring.get("error"):
        row["flags"].append("scoring_failed")
        return
    row["problems"], row["solved"] = scoring.get("problems"), scoring.get("solved")
    row["pass_at_1"] = pass_at_1(row["solved"], row["problems"])
    row["skipped_prompts"] = (manifest.get("workload") or {}).get("skipped_count")
    row["scoring_isolation"] = (scoring.get("isolation") or {}).get("isolation")
    if scoring.get("unsafe"):
        row["flags"].append("scoring_unsafe_local")
    row["energy_per_solved_j"] = per_solved(row.get("energy_global_j"), row["solved"])
    row["energy_per_solved_provenance"] = row.get("energy_global_provenance")
    row["time_per_solved_s"] = per_solved(row.get("time_s"), row["solved"])
    if not row["solved"]:
        note = "per solved task undefined: no problem solved"
        row["energy_notes"] = "; ".join(x for x in (row.get("energy_notes"), note) if x)


# ---------------------------------------------------------------- output equivalence

def output_match(records: list[RunRecord]) -> dict[str, list[str]]:
    """Set ``output_match_rate`` on every row: the share of the reference run's answered prompts whose
    token ids this run reproduced exactly. Reference = the lowest-rep run of torch-<provider> of the same
    model, prompt set and generation limits (greedy, max_length, max_new_tokens, ignore_eos). Returns
    the notes for the report (models/configs with no reference)."""
    notes: dict[str, list[str]] = {"no_reference": [], "work_differs": []}
    refs: dict[tuple[str, str, str | None], RunRecord] = {}
    for rec in records:
        r = rec.row
        if not rec.digests:
            continue
        key = (r["model"], r["config"], rec.work)
        cur = refs.get(key)
        if cur is None or (r.get("rep") or 0, r["run_id"]) < (cur.row.get("rep") or 0, cur.row["run_id"]):
            refs[key] = rec
    for rec in records:  # a lower precision against its own configuration at fp32 (what the precision changed)
        own = fp32_config(rec.row["config"])
        ref = refs.get((rec.row["model"], own, rec.work)) if own else None
        if ref is not None and rec.digests:
            same, n = agreement(rec.digests, ref.digests)
            if n:
                rec.row["output_match_fp32_rate"] = same / n
                rec.row["output_fp32_reference"] = ref.row["run_id"]
    for rec in records:
        r = rec.row
        ref_cfg = reference_config(r["config"])
        ref = refs.get((r["model"], ref_cfg, rec.work))
        if ref is None:
            if any(k[0] == r["model"] and k[1] == ref_cfg for k in refs):
                notes["work_differs"].append(f"{r['model']} {r['config']}")
            else:
                notes["no_reference"].append(f"{r['model']} {r['config']}")
            continue
        if not rec.digests:
            continue
        same, n = agreement(rec.digests, ref.digests)
        if not n:
            continue
        r["output_match_rate"] = same / n
        r["output_reference"] = ref.row["run_id"]
        if same < n:
            r["flags"].append(f"output_match={100 * same / n:.1f}%")
        elif r.get("pass_at_1") is not None and ref.row.get("pass_at_1") is not None \
                and r["pass_at_1"] != ref.row["pass_at_1"]:
            # the same tokens must solve the same problems: anything else is a non-equivalence
            r["flags"].append(f"pass_at_1_differs_from_{ref_cfg}")
    notes = {k: sorted(set(v)) for k, v in notes.items()}
    return notes


# ---------------------------------------------------------------- the table

def to_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows -> runs table with the fixed column order (extra columns kept at the end)."""
    df = pd.DataFrame(rows)
    for col in RUN_COLUMNS:
        if col not in df:
            df[col] = np.nan
    if "flags" in df:
        df["flags"] = df["flags"].map(
            lambda f: ";".join(dict.fromkeys(f)) if isinstance(f, list) else (f if isinstance(f, str) else ""))
    extra = [c for c in df.columns if c not in RUN_COLUMNS]
    df = df[list(RUN_COLUMNS) + extra]
    if len(df):
        df = df.sort_values(
            ["size_category", "model", "config", "rep", "run_id"],
            key=lambda s: s.map(model_sort_key) if s.name == "model" else (
                s.map(config_sort_key) if s.name == "config" else s),
            na_position="last").reset_index(drop=True)
    return df


def read_results(results: Path, *, exclude: Path | None = None, jobs: int | None = None,
                 quiet: bool = False) -> tuple[pd.DataFrame, list[LeftOut], dict]:
    """Read every complete run under ``results``. Returns (runs table, left-out runs, notes)."""
    usable, left_out = discover(Path(results), exclude)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(usable) or 1))
    records: list[RunRecord] = []
    bar = progress(total=len(usable), desc="reading runs", quiet=quiet)
    if jobs == 1 or len(usable) < 4:
        for folder, manifest in usable:
            records.append(read_run(folder, manifest))
            bar.update()
    else:
        gc.freeze()  # the workers are forked: keep the parent's objects out of their collector's walks
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futs = [pool.submit(read_run, folder, manifest) for folder, manifest in usable]
            for fut in as_completed(futs):
                records.append(fut.result())
                bar.update()
        gc.unfreeze()
    bar.close()
    notes = output_match(records)
    notes["warnings"] = [w for rec in records for w in rec.warnings]
    notes["folders"] = {m.get("run_id") or f.name: str(f) for f, m in usable}
    return to_frame([rec.row for rec in records]), left_out, notes
