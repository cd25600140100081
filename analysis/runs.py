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
from analysis.catalog import (ENERGY_DOMAINS, RUN_COLUMNS, canonical_model, config_sort_key,
                              model_sort_key, reference_config, size_category_for)
from analysis.progress import progress

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
REQUEST_COLUMNS = ["index", "status", "prompt_tokens", "completion_tokens", "latency_s", "token_ids"]


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


def read_requests(folder: Path, row: dict, record: RunRecord) -> None:
    path = folder / "requests.csv"
    if not path.is_file():
        row["flags"].append("no_requests_csv")
        return
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


def _weighted_idle(E, series, phases: dict) -> dict[str, float | None]:
    """Idle power per domain: the duration-weighted mean over the idle windows before and after."""
    acc: dict[str, list[tuple[float, float]]] = {}
    for name in ("idle_before", "idle_after"):
        ph = phases.get(name) or {}
        if not (_finite(ph.get("start")) and _finite(ph.get("end"))) or ph["end"] <= ph["start"]:
            continue
        for dom, watts in (E.idle_power(series, ph["start"], ph["end"]) or {}).items():
            if _finite(watts):
                acc.setdefault(dom, []).append((float(watts), ph["end"] - ph["start"]))
    return {d: sum(w * s for w, s in v) / sum(s for _, s in v) for d, v in acc.items() if v}


def energy_columns(E, series: pd.DataFrame, manifest: dict, row: dict) -> None:
    phases = manifest["phases"]
    t0, t1 = float(phases["inference"]["start"]), float(phases["inference"]["end"])
    time_s = row["time_s"]
    readings = E.window_energy(series, t0, t1) or {}
    # A host that lists no GPU (run.json host.gpus == []) has no GPU energy to measure: global energy is
    # CPU alone there (said so in the flags). Anywhere else a GPU reading without value is missing.
    gpus = (manifest.get("host") or {}).get("gpus")
    no_gpu_host = isinstance(gpus, list) and not gpus
    notes = []
    for dom in ENERGY_DOMAINS:
        r = readings.get(dom)
        if r is None:
            continue
        joules = _num(r.joules)
        if dom == "gpu" and joules is None and no_gpu_host:
            continue
        row[f"energy_{dom}_j"] = joules
        row[f"energy_{dom}_source"] = r.source
        row[f"energy_{dom}_estimated"] = bool(r.estimated)
        row[f"energy_{dom}_method"] = r.method
        row[f"energy_{dom}_complete"] = bool(r.complete)
        if getattr(r, "note", ""):
            notes.append(f"{dom}: {r.note}")
        if joules is None:
            row["flags"].append(f"missing:{dom}")
        else:
            if r.estimated:
                row["flags"].append(f"estimated:{dom}")
            if not r.complete:
                row["flags"].append(f"incomplete:{dom}")
    row["energy_notes"] = "; ".join(notes) or None

    # Global = CPU + GPU, as the study. CPU alone only where the host has no GPU (host.gpus == []) or,
    # when run.json does not say, where no GPU sensor ran at all; otherwise a GPU without value = missing.
    cpu, gpu = row.get("energy_cpu_j"), row.get("energy_gpu_j")
    if cpu is not None and gpu is not None:
        row["energy_global_j"], row["energy_global_parts"] = cpu + gpu, "cpu+gpu"
    elif cpu is not None and (no_gpu_host or (gpus is None and "gpu" not in readings)):
        row["energy_global_j"], row["energy_global_parts"] = cpu, "cpu"
        row["flags"].append("global=cpu-only")
    elif cpu is not None and "gpu" not in readings:
        row["flags"].append("missing:gpu")  # the host has a GPU but no GPU sensor ran

    if row.get("energy_global_j") is not None:
        est = any(row.get(f"energy_{p}_estimated") for p in row["energy_global_parts"].split("+"))
        row["energy_global_estimated"] = est
        row["energy_global_provenance"] = "estimated" if est else "measured"
    else:
        row["energy_global_provenance"] = "missing"

    idle = _weighted_idle(E, series, phases)
    for dom in ("cpu", "gpu", "wall"):
        watts = idle.get(dom)
        row[f"idle_power_{dom}_w"] = watts
        if watts is not None and row.get(f"energy_{dom}_j") is not None:
            row[f"dynamic_energy_{dom}_j"] = row[f"energy_{dom}_j"] - watts * time_s
    if row.get("energy_global_j") is not None:
        parts = row["energy_global_parts"].split("+")
        idle_w = [idle.get(p) for p in parts]
        if all(w is not None for w in idle_w):
            idle_j = sum(idle_w) * time_s
            row["dynamic_energy_global_j"] = row["energy_global_j"] - idle_j
            if row["energy_global_j"] > 0:
                row["idle_share"] = idle_j / row["energy_global_j"]

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
    cat = model.get("size_category") or size_category_for(name, model.get("params"))
    phases = manifest["phases"]
    row: dict = {
        "model": name,
        "size_category": cat,
        "config": config,
        "rep": (manifest.get("protocol") or {}).get("rep"),
        "run_id": manifest.get("run_id") or folder.name,
        "engine": manifest.get("engine") or engine,
        "provider": manifest.get("provider") or provider,
        "time_s": float(phases["inference"]["end"]) - float(phases["inference"]["start"]),
        "study": (manifest.get("study") or {}).get("name"),
        "flags": [f"sensor_unavailable:{x.get('name')}" for x in manifest.get("sensors") or []
                  if isinstance(x, dict) and not x.get("available")],
    }
    gen = manifest.get("generation") or {}
    work = json.dumps([(manifest.get("prompts") or {}).get("sha256"),
                       *(gen.get(k) for k in ("greedy", "max_length", "max_new_tokens", "ignore_eos"))])
    record = RunRecord(row=row, work=work)
    try:
        read_requests(folder, row, record)
    except Exception as e:  # a damaged requests.csv must not stop the analysis of 839 other runs
        row["flags"].append("requests_unreadable")
        record.warnings.append(f"{row['run_id']}: requests.csv unreadable: {e}")
    if row.get("completion_tokens") and row["time_s"] > 0:
        row["tokens_per_s"] = row["completion_tokens"] / row["time_s"]

    if not (folder / "series.csv").is_file():
        row["flags"].append("no_series_csv")
    else:
        from analysis import energy as E  # lazily: another module owns the energy arithmetic

        try:
            series = read_series(folder)
            energy_columns(E, series, manifest, row)
        except Exception as e:
            row["flags"].append("energy_error")
            record.warnings.append(f"{row['run_id']}: energy/utilization not computed: {type(e).__name__}: {e}")

    g = row.get("energy_global_j")
    if g is not None:
        if row.get("requests_ok"):
            row["energy_per_request_j"] = g / row["requests_ok"]
        if row.get("completion_tokens"):
            row["energy_per_token_j"] = g / row["completion_tokens"]
    return record


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
        want = {i: d for i, d in ref.digests.items() if d is not None}
        if not want:
            continue
        same = sum(1 for i, d in want.items() if rec.digests.get(i) == d)
        r["output_match_rate"] = same / len(want)
        r["output_reference"] = ref.row["run_id"]
        if same < len(want):
            r["flags"].append(f"output_match={100 * same / len(want):.1f}%")
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
