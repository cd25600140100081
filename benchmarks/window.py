"""How exact is the measured window, and how much CPU does the harness take inside it?

    python benchmarks/window.py [--config onnx-cpu] [--prompts 40] [--reps 1] [--bench-args "..."]
    python benchmarks/window.py --results results/smoke      # read runs already made (e.g. make study)

Runs real bench runs (native runner, the `tiny` model by default) on the first N prompts of the paper
set, or reads the run folders under --results, and prints per run:
- requests' span (first request sent → last answer received, from requests.csv),
- the inference window (run.json), and its excess over the span (goal: ≤ 1 %; the window is defined as
  the span, so anything above 0 is a bug),
- the replay (Locust launch → exit), i.e. what the window was before it was the span, and its excess,
- the harness CPU (bench process, sampler, exporters, Locust) as a share of the service's CPU over the
  window (goal: ≤ 1 % on tiny, ≤ 3 % on the smoke study), and its largest parts.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadgen.runfolder import read_requests  # noqa: E402
from analysis.quantities import request_span  # noqa: E402


def runs_under(results: Path) -> list[Path]:
    return sorted(p.parent for p in results.rglob("run.json") if (p.parent / "requests.csv").exists())


def measure(run_dir: Path) -> dict | None:
    m = json.loads((run_dir / "run.json").read_text())
    if m.get("status") != "complete":
        return None
    span = request_span(read_requests(run_dir / "requests.csv"))
    ph = m["phases"]
    window = ph["inference"]["end"] - ph["inference"]["start"]
    length = span[1] - span[0]
    replay = (ph["replay_stop"]["end"] - ph["replay_start"]["start"]) if "replay_start" in ph else None
    ho = m.get("harness_overhead") or {}
    return {"run": m["run_id"], "config": m["config"], "span_s": length, "window_s": window,
            "excess": window / length - 1, "replay_excess": replay / length - 1 if replay else None,
            "harness": ho.get("harness_share_of_service"), "by_role": ho.get("harness_cpu_s_by_role") or {},
            "service_cpu_s": ho.get("service_cpu_s")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="onnx-cpu")
    p.add_argument("--model", default="tiny")
    p.add_argument("--prompts", type=int, default=40, help="first N prompts of the paper set (default 40)")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--bench-args", default="--warmup 2 --cooldown 2", help="more options for loadgen.bench")
    p.add_argument("--results", type=Path, help="read these run folders instead of running the bench")
    args = p.parse_args(argv)
    if args.results is None:
        tmp = Path(tempfile.mkdtemp(prefix="wattserve-window-"))
        prompts = tmp / f"paper-first{args.prompts}.jsonl"
        lines = (ROOT / "loadgen" / "prompts" / "paper-prompts.jsonl").read_text().splitlines(keepends=True)
        prompts.write_text("".join(lines[: args.prompts]))
        args.results = tmp / "results"
        cmd = [sys.executable, "-m", "loadgen.bench", "--runner", "native", "--config", args.config,
               "--model", args.model, "--prompts", str(prompts), "--reps", str(args.reps),
               "--results", str(args.results), *shlex.split(args.bench_args)]
        print("$", " ".join(cmd), flush=True)
        out = subprocess.run(cmd, cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
        if out.returncode != 0:
            print(f"bench exited {out.returncode}", file=sys.stderr)
    rows = [r for r in map(measure, runs_under(args.results)) if r]
    if not rows:
        print(f"no complete run under {args.results}", file=sys.stderr)
        return 1
    print(f"\n{'run':58} {'span s':>8} {'window s':>9} {'excess':>8} {'replay excess':>14} {'harness CPU':>12}  top parts")
    for r in rows:
        top = ", ".join(f"{k} {v:.2f}s" for k, v in sorted(r["by_role"].items(), key=lambda kv: -kv[1])[:3])
        replay = f"{100 * r['replay_excess']:.1f} %" if r["replay_excess"] is not None else "-"
        harness = f"{100 * r['harness']:.2f} %" if r["harness"] is not None else "-"
        print(f"{r['run']:58} {r['span_s']:8.2f} {r['window_s']:9.2f} {100 * r['excess']:7.2f} % {replay:>14} "
              f"{harness:>12}  {top} (service {r['service_cpu_s']} s)")
    worst = max(r["excess"] for r in rows)
    print(f"\nworst window excess over the requests' span: {100 * worst:.2f} % (goal <= 1 %)")
    shares = [r["harness"] for r in rows if r["harness"] is not None]
    if shares:
        print(f"harness CPU share of the service: max {100 * max(shares):.2f} %, "
              f"mean {100 * sum(shares) / len(shares):.2f} %")
    return 0 if worst <= 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
