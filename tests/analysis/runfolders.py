"""Synthetic run folders, written per docs/run-folder.md, with energy counters growing at known watts.

Used by the analysis tests (known answers) and by benchmarks/analysis_scale.py (the study's scale).
The series follows the exporters' conventions: ``wattserve_energy_joules_total`` counters with
``domain``/``device``/``source``/``estimated`` labels, utilization and memory gauges, one row per
(scrape, sample), labels as a JSON object with sorted keys.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

PHASES = ("load", "idle_before", "inference", "idle_after")


def run_id_for(start: float, config: str, model: str, rep: int) -> str:
    stamp = datetime.fromtimestamp(start, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{config}-{model.replace('/', '--')}-r{rep}"


def _labels(**kw) -> str:
    return json.dumps({k: v for k, v in kw.items() if v is not None}, sort_keys=True)


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def write_run(root: Path, *, model: str = "codeparrot-small", config: str = "torch-cpu", rep: int = 1,
              size_category: int | None = 1, params: int | None = 110_000_000, start: float = 1_790_000_000.0,
              load_s: float = 4.0, idle_s: float = 10.0, inference_s: float = 30.0, interval: float = 0.5,
              cpu_idle_w: float = 10.0, cpu_busy_w: float = 40.0, cpu_estimated: bool = True,
              gpu_idle_w: float | None = None, gpu_busy_w: float | None = None,
              wall_idle_w: float | None = None, wall_busy_w: float | None = None,
              cpu_util: float = 0.5, gpu_util: float | None = None, gpu_mem_util: float | None = None,
              mem_used: float = 8e9, mem_total: float = 16e9,
              gpu_mem_used: float | None = None, gpu_mem_total: float | None = None,
              n_prompts: int = 10, tokens_per_prompt: int = 8, mismatch: set[int] | frozenset = frozenset(),
              failed: set[int] | frozenset = frozenset(), status: str = "complete", error: str | None = None,
              with_series: bool = True, with_requests: bool = True, prompts_sha: str = "synthetic-prompts",
              host_gpus: list | None = None, nvml_down: bool = False, max_new_tokens: int | None = None,
              run_id: str | None = None, timing: bool = True) -> Path:
    """Write one run folder under ``root`` and return it.

    Power is ``*_idle_w`` outside the inference phase and ``*_busy_w`` inside it, so the energy of the
    inference window is ``busy_w x inference_s`` and the idle power is ``idle_w``. Utilization gauges
    are ``cpu_util`` etc. during inference and 0.02 outside. Token ids of prompt i are
    ``[i, i+1, ...]`` (``+ 1000`` where i is in ``mismatch``); prompts in ``failed`` have status failed.
    ``host_gpus`` (run.json host.gpus) defaults to one GPU when a GPU sensor is written, else none;
    ``nvml_down`` adds an NVML sensor that reports ``wattserve_sensor_up 0`` (no energy series).
    ``timing``: prompt i's ``ttft_s`` is 0.01 x (i + 1) and its ``decode_s`` 0.07 (``itl_mean_s`` 0.07 /
    (tokens - 1)).
    """
    if host_gpus is None:
        host_gpus = [{"index": 0, "name": "Synthetic GPU", "memory_total_bytes": 24e9}] if gpu_idle_w is not None else []
    t = start
    phases = {}
    for name, dur in zip(PHASES, (load_s, idle_s, inference_s, idle_s)):
        phases[name] = {"start": t, "end": t + dur}
        t += dur
    end = t
    rid = run_id or run_id_for(start, config, model, rep)
    folder = Path(root) / rid
    folder.mkdir(parents=True, exist_ok=True)
    engine, provider = config.rsplit("-", 1)
    inf0, inf1 = phases["inference"]["start"], phases["inference"]["end"]

    if with_requests:
        lines = ["index,task_id,start,end,latency_s,server_latency_s,http_status,status,prompt_tokens,"
                 "completion_tokens,output,token_ids,error" + (",ttft_s,decode_s,itl_mean_s" if timing else "")]
        step = inference_s / n_prompts
        for i in range(n_prompts):
            s, e = inf0 + i * step, inf0 + (i + 1) * step
            ok = i not in failed
            ids = [i + k + (1000 if i in mismatch else 0) for k in range(tokens_per_prompt)]
            lines.append(",".join([
                str(i), f"RandomTokens/{i}", f"{s:.6f}", f"{e:.6f}", f"{e - s:.6f}", f"{0.9 * (e - s):.6f}",
                "200" if ok else "500", "ok" if ok else "failed", "12",
                str(tokens_per_prompt if ok else 0),
                _csv_field(f"def f{i}(x):\n    return x, 'a,b'") if ok else "",
                " ".join(map(str, ids)) if ok else "",
                "" if ok else "synthetic failure",
            ] + ([f"{0.01 * (i + 1):.6f}", "0.07", f"{0.07 / (tokens_per_prompt - 1):.9f}" if tokens_per_prompt > 1
                  else ""] if timing and ok else ["", "", ""] if timing else [])))
        (folder / "requests.csv").write_text("\n".join(lines) + "\n")

    if with_series:
        ts = np.arange(start, end + interval / 2, interval)
        busy = (ts >= inf0) & (ts <= inf1)
        chunks: list[str] = []

        def counter(sensor, idle_w, busy_w, **labels):
            # cumulative energy, exact at every phase boundary (piecewise-linear in time)
            knots = np.array([start, inf0, inf1, end])
            cum = np.cumsum([0.0, idle_w * (inf0 - start), busy_w * (inf1 - inf0), idle_w * (end - inf1)])
            gauge(sensor, "wattserve_energy_joules_total", 1000.0 + np.interp(ts, knots, cum), **labels)

        def gauge(sensor, metric, values, **labels):
            lab = _csv_field(_labels(**labels))
            values = np.broadcast_to(values, ts.shape)
            chunks.append("\n".join(f"{a:.3f},{sensor},{metric},{lab},{v:.6g}" for a, v in zip(ts, values)))

        counter("rapl" if not cpu_estimated else "estimate", cpu_idle_w, cpu_busy_w, domain="cpu",
                device="package-0", source="estimate" if cpu_estimated else "rapl",
                estimated="true" if cpu_estimated else "false")
        if gpu_idle_w is not None:
            counter("nvml", gpu_idle_w, gpu_busy_w, domain="gpu", device="gpu-0", source="nvml", estimated="false")
        if wall_idle_w is not None:
            gauge("netio", "wattserve_power_watts", np.where(busy, wall_busy_w, wall_idle_w),
                  domain="wall", device="output-1", source="netio", estimated="false")
        if nvml_down:
            gauge("nvml", "wattserve_sensor_up", 0.0, source="nvml")
        gauge("host", "wattserve_cpu_utilization_ratio", np.where(busy, cpu_util, 0.02))
        gauge("host", "wattserve_memory_used_bytes", np.where(busy, mem_used, mem_used / 2))
        gauge("host", "wattserve_memory_total_bytes", mem_total)
        if gpu_util is not None:
            gauge("nvml", "wattserve_gpu_utilization_ratio", np.where(busy, gpu_util, 0.0), device="gpu-0")
            gauge("nvml", "wattserve_gpu_memory_utilization_ratio",
                  np.where(busy, gpu_mem_util if gpu_mem_util is not None else gpu_util / 2, 0.0), device="gpu-0")
            gauge("nvml", "wattserve_gpu_memory_used_bytes", gpu_mem_used or 2e9, device="gpu-0")
            gauge("nvml", "wattserve_gpu_memory_total_bytes", gpu_mem_total or 24e9, device="gpu-0")
        with open(folder / "series.csv", "w") as fh:
            fh.write("t,sensor,metric,labels,value\n")
            for c in chunks:
                fh.write(c)
                fh.write("\n")

    n_ok = n_prompts - len(failed)
    manifest = {
        "schema": 1, "run_id": rid, "status": status, "error": error,
        "config": config, "engine": engine, "provider": provider, "runner": "native",
        "model": {"name": model, "kind": "hub", "source": model, "revision": "synthetic", "content_hash": None,
                  "params": params, "size_category": size_category},
        "prompts": {"name": "synthetic", "path": None, "sha256": prompts_sha, "count": n_prompts},
        "generation": {"greedy": True, "max_length": 128, "max_new_tokens": max_new_tokens, "ignore_eos": False,
                       "threads": None, "precision": "fp32"},
        "protocol": {"rep": rep, "reps": None, "warmup_s": 0, "cooldown_s": 0, "request_timeout_s": 60,
                     "sample_interval_s": interval},
        "phases": phases,
        "service": {"engine": engine, "kv_cache": True},
        "host": {"hostname": "synthetic", "os": "Linux", "kernel": "", "cpu_model": "synthetic", "cpu_count": 2,
                 "ram_bytes": int(mem_total), "gpus": host_gpus},
        "software": {"python": "3.11"},
        "sensors": [{"name": "estimate", "url": None, "source": "estimate", "estimated": cpu_estimated,
                     "available": True, "error": None}],
        "summary": {"requests": n_prompts, "ok": n_ok, "failed": len(failed), "time_s": inference_s, "energy": {}},
        "created_at": start, "finished_at": end,
    }
    tmp = folder / "run.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, folder / "run.json")
    return folder



# ---------------------------------------------------------------- several runs at once

NORMAL_OFFSETS = (-1.2, -0.5, 0.0, 0.5, 1.2)  # textbook-normal: Shapiro-Wilk keeps normality


def write_cells(root: Path, cells: dict[tuple[str, str], dict], *, reps: int = 3,
                start: float = 1_790_000_000.0, **common) -> list[Path]:
    """One run folder per (model, config) cell and repetition, at increasing start times.

    ``cells`` maps (model, config) -> write_run keyword arguments of that cell (``size_category``,
    ``cpu_busy_w``, ``cpu_estimated``, ...); ``common`` applies to all. ``cpu_busy_w`` gets a small
    normal offset per repetition so that the tests have variance to work on.
    """
    folders, t = [], start
    for (model, config), kw in cells.items():
        for rep in range(1, reps + 1):
            args = {"inference_s": 10.0, "idle_s": 5.0, "n_prompts": 5, **common, **kw}
            if "cpu_busy_w" in args:
                args["cpu_busy_w"] = args["cpu_busy_w"] + NORMAL_OFFSETS[(rep - 1) % len(NORMAL_OFFSETS)]
            folders.append(write_run(root, model=model, config=config, rep=rep, start=t, **args))
            t += 100.0
    return folders


def set_study(folder: Path, name: str, cell: dict | None = None) -> Path:
    """Mark a run folder as a run of study ``name`` (run.json ``study``), as ``make study`` writes it."""
    path = Path(folder) / "run.json"
    manifest = json.loads(path.read_text())
    manifest["study"] = {"name": name, "cell": cell or {"model": manifest["model"]["name"],
                                                        "config": manifest["config"],
                                                        "rep": manifest["protocol"]["rep"]}}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)
    return Path(folder)


def set_scoring(folder: Path, solved: int, problems: int = 164, isolation: str = "namespace",
                unsafe: bool = False) -> Path:
    """Make a run folder a scored run of the humaneval workload (run.json workload and scoring, as the
    bench writes them after the run)."""
    path = Path(folder) / "run.json"
    manifest = json.loads(path.read_text())
    manifest["workload"] = {"name": "humaneval", "problems": problems, "replayed": problems, "skipped_count": 0,
                            "skipped": []}
    manifest["scoring"] = {"problems": problems, "solved": solved, "pass_at_1": solved / problems,
                           "failures": {"assertion": problems - solved}, "unsafe": unsafe,
                           "isolation": {"isolation": "UNSAFE-LOCAL" if unsafe else isolation}}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)
    return Path(folder)
