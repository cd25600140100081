"""``python -m scoring COMPLETIONS.jsonl`` (``make score COMPLETIONS=…``): pass@1 of a JSONL of
``{task_id, completion}`` against HumanEval's tests, each completion in a throw-away sandbox."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scoring.problems import ProblemError, problems
from scoring.sandbox import ISOLATIONS, Limits, SandboxUnavailable, choose
from scoring.score import read_completions, score


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m scoring", description=__doc__,
        epilog="Isolation: docker (a container per completion: no network, read-only root, uid 65534, "
               "no capabilities, memory/CPU/pids limits) or namespace (unshare: own network/PID/mount "
               "namespaces, read-only mounts, private /tmp, uid 65534, rlimits; needs root). Neither "
               "available: exit 3 with how to enable one. Exit 0 when scored (whatever pass@1 is), 2 on "
               "bad input.")
    p.add_argument("completions", type=Path, help="JSONL: one {task_id, completion} per line")
    p.add_argument("--isolation", choices=[i for i in ISOLATIONS if i != "unsafe-local"], default="auto",
                   help="the sandbox (default auto: docker, else namespace)")
    p.add_argument("--unsafe-local-exec", action="store_true",
                   help="run completions WITHOUT a sandbox (rlimits only): they can read and write this "
                        "user's files, reach the network and signal its processes; labelled unsafe-local")
    p.add_argument("--all-problems", action="store_true",
                   help="score all 164 problems; those without a completion count as missing (not solved)")
    p.add_argument("--time-limit", type=float, default=Limits.time_s, metavar="S",
                   help="CPU and wall-clock seconds per completion (default %(default)s)")
    p.add_argument("--memory-mib", type=int, default=Limits.memory_mib, help="address space per completion")
    p.add_argument("--workers", type=int, default=2, help="sandboxes at a time (default %(default)s)")
    p.add_argument("--out", type=Path, help="write every problem's outcome here (JSONL)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        completions = read_completions(args.completions)
        limits = Limits(time_s=args.time_limit, memory_mib=args.memory_mib)
        box = choose("unsafe-local" if args.unsafe_local_exec else args.isolation, limits)
        scores = score(completions, box, workers=args.workers,
                       task_ids=list(problems()) if args.all_problems else None)
    except (ProblemError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SandboxUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    if args.out:
        scores.write_jsonl(args.out)
    print(json.dumps(scores.summary(), indent=2) if args.json else scores.text())
    return 0
