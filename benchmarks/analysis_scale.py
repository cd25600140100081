"""Analysis at the study's scale: time and peak memory of ``python -m analysis`` on a synthetic tree.

Generates 12 models x 7 configurations x 10 repetitions = 840 run folders (164 requests each; sensor
series sampled every 0.5 s: CPU estimate counter, GPU NVML counter, wall power, CPU/RAM/GPU gauges),
with inference durations of 60-600 s by model size and configuration and 60 s idle windows, into a
temporary folder; then runs the analysis in a subprocess and reports wall time and peak memory (the
whole process tree, sampled, and the largest single process from getrusage). Goal: <= 60 s, <= 4 GiB.

    python benchmarks/analysis_scale.py [--reps 10] [--models 12] [--keep DIR] [--reuse DIR] [--jobs N]

Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.catalog import CONFIG_ORDER, MODELS  # noqa: E402

GOAL_S, GOAL_BYTES = 60.0, 4 * 1024 ** 3
# inference seconds at size category 1/2/3 on torch-cpu; other configurations scale it (then clipped)
BASE_S = {1: 150.0, 2: 320.0, 3: 600.0}
SPEED = {"torch-cpu": 1.0, "onnx-cpu": 0.8, "ov-cpu": 0.6, "jit-cpu": 0.9,
         "torch-cuda": 0.15, "onnx-cuda": 0.3, "jit-cuda": 0.2}


def _one(args: tuple) -> int:
    root, i, model, cat, params, config, rep, interval, prompts, seed = args
    import numpy as np

    from tests.analysis.runfolders import write_run

    rng = np.random.default_rng(seed)
    cuda = config.endswith("-cuda")
    inference_s = float(np.clip(BASE_S[cat] * SPEED[config] * rng.normal(1.0, 0.05), 60.0, 600.0))
    write_run(root, model=model, config=config, rep=rep, size_category=cat, params=params,
              start=1_790_000_000.0 + 3600.0 * i, load_s=10.0, idle_s=60.0, inference_s=inference_s,
              interval=interval, cpu_idle_w=25.0, cpu_busy_w=(60.0 if cuda else 120.0) * rng.normal(1, 0.03),
              gpu_idle_w=20.0, gpu_busy_w=(250.0 if cuda else 22.0) * rng.normal(1, 0.03),
              wall_idle_w=70.0, wall_busy_w=(330.0 if cuda else 190.0) * rng.normal(1, 0.03),
              cpu_util=0.15 if cuda else 0.9, gpu_util=0.85 if cuda else 0.0, gpu_mem_util=0.4 if cuda else 0.0,
              gpu_mem_used=6e9 if cuda else 0.5e9, gpu_mem_total=24e9, mem_used=12e9, mem_total=64e9,
              n_prompts=prompts, tokens_per_prompt=32, mismatch={3} if config == "ov-cpu" else set())
    return 1


def generate(root: Path, models: int, reps: int, interval: float, prompts: int, jobs: int) -> int:
    tasks, i = [], 0
    for model, (_, params, cat) in list(MODELS.items())[:models]:
        for config in CONFIG_ORDER:
            for rep in range(1, reps + 1):
                tasks.append((root, i, model, cat, params, config, rep, interval, prompts, i))
                i += 1
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        done = 0
        for _ in pool.map(_one, tasks, chunksize=4):
            done += 1
            if done % 84 == 0 or done == len(tasks):
                print(f"  generated {done}/{len(tasks)} run folders", file=sys.stderr, flush=True)
    return len(tasks)


def tree_rss(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p] + p.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=12)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--prompts", type=int, default=164)
    ap.add_argument("--interval", type=float, default=0.5, help="sampling interval of the series (s)")
    ap.add_argument("--jobs", type=int, default=None, help="--jobs passed to the analysis (default: its own)")
    ap.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    ap.add_argument("--reuse", type=Path, help="analyse an already generated folder (no generation)")
    args = ap.parse_args()

    if args.reuse:
        root, cleanup = args.reuse, False
    else:
        root = args.keep or Path(tempfile.mkdtemp(prefix="wattserve-scale-"))
        cleanup = args.keep is None
        root.mkdir(parents=True, exist_ok=True)
        n = args.models * len(CONFIG_ORDER) * args.reps
        print(f"generating {n} run folders ({args.prompts} requests each, {args.interval} s sampling) into {root}",
              file=sys.stderr)
        t = time.monotonic()
        generate(root, args.models, args.reps, args.interval, args.prompts, os.cpu_count() or 1)
        print(f"generated in {time.monotonic() - t:.1f} s, {du(root) / 1e6:.0f} MB on disk", file=sys.stderr)
    try:
        out = root / "report"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "analysis", "--results", str(root), "--out", str(out), "--quiet"]
        if args.jobs:
            cmd += ["--jobs", str(args.jobs)]
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak_tree = 0
        while proc.poll() is None:
            peak_tree = max(peak_tree, tree_rss(proc.pid))
            time.sleep(0.1)
        wall = time.monotonic() - t0
        output = proc.stdout.read()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_single = usage.ru_maxrss * 1024  # Linux: KiB
        cpu_s = usage.ru_utime + usage.ru_stime  # the analysis and its worker processes
        print("\n".join(l for l in output.splitlines() if not l.startswith("  /")))
        if proc.returncode != 0:
            print(f"analysis failed with exit status {proc.returncode}")
            return proc.returncode
        runs = sum(1 for _ in open(out / "runs.csv")) - 1
        print()
        print(f"runs analysed            {runs}")
        load = os.getloadavg()[0]
        print(f"CPUs                     {os.cpu_count()} (1-min load average at the end: {load:.1f})")
        print(f"CPU time, all processes  {cpu_s:.1f} s (user + system; independent of other load)")
        print(f"wall time                {wall:.1f} s   (goal <= {GOAL_S:.0f} s)  {'OK' if wall <= GOAL_S else 'OVER'}")
        print(f"peak RSS, process tree   {peak_tree / 2 ** 30:.2f} GiB (sampled every 0.1 s; goal <= 4 GiB)  "
              f"{'OK' if peak_tree <= GOAL_BYTES else 'OVER'}")
        print(f"peak RSS, one process    {peak_single / 2 ** 30:.2f} GiB (getrusage, largest child)")
        return 0 if wall <= GOAL_S and peak_tree <= GOAL_BYTES else 1
    finally:
        if cleanup:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
