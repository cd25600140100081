"""Decode tokens/s of every CPU configuration × precision against this machine's memory-bandwidth roofline.

    python benchmarks/roofline.py [--model shape:bigcode/tiny_starcoder_py] [--configs cpu]
                                  [--precisions fp32,int8] [--prompts 8] [--tokens 64] [--threads N]
                                  [--out results/roofline-….json]          (make benchmark-roofline)

Batch-1 decoding reads every weight once per token, so on a CPU its ceiling is memory bandwidth /
weight bytes per token (analysis/quantities.py ``roofline_tokens_per_s``). This benchmark measures both
in the same run: the bandwidth (benchmarks/bandwidth.py: STREAM copy and triad, and a read-only sum,
before and after the engine rows, on the engines' thread count) and, per configuration and precision, the
decode rate of a fixed workload — the first ``--prompts`` paper prompts × ``--tokens`` new tokens with
ignore_eos, so every row does equal work — after preparing (cached, untimed), loading and warming up
(benchmarks/roofline_row.py, one process per row). Decode tokens/s = tokens after each first token /
the time after it. The roofline uses the best triad figure of the run; the weight bytes are the
engine's own (its loaded model or its artifact on disk; the table says which), an upper bound of what
one token reads: an embedding table is read one row per token (a tied one is read whole by the LM
head; the shape model's 25 MB position table of its 656 MB is not), and the KV cache's few kB per
layer are left out. Beside each row: how many prompts' ids equal the same engine's fp32 and torch-cpu
fp32 (exact n/N, mean common prefix).

``--precisions`` defaults to every precision each engine declares (``Engine.precisions``); one an engine
does not serve, or a configuration that refuses to load, is listed as refused with its reason. fp32 of
each engine is always run: it is the reference of that engine's agreement. A JSON file with every
figure (bandwidth samples, per-request times, load averages) is rewritten after each row with
``status: running`` and ends ``complete``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.quantities import decode_tokens_per_s, roofline_tokens_per_s  # noqa: E402
from benchmarks import bandwidth  # noqa: E402
from benchmarks.roofline_row import MARK  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ROW = Path(__file__).resolve().parent / "roofline_row.py"
DEFAULT_MODEL = "shape:bigcode/tiny_starcoder_py"
ROOFLINE_KERNEL = "triad"  # the bandwidth the roofline uses: STREAM's headline kernel, best of the run
COLUMNS = ("config", "precision", "status", "weight MB", "weight bytes from", "decode tok/s", "roofline tok/s",
           "% of roofline", "= own fp32", "prefix", "= torch fp32", "prefix", "ready s", "load avg")


def plan(configs: list[str], precisions: list[str] | None) -> list[dict]:
    """The rows to run, in order; a precision an engine does not declare is a refused row (never dropped)."""
    from services.inference.configs import ServingConfig
    from services.inference.engines import engine_class
    from services.inference.engines.precision import PrecisionError, check_engine

    rows = []
    for config in configs:
        cls = engine_class(ServingConfig.parse(config).engine)
        wanted = list(cls.precisions) if precisions is None else precisions
        for precision in (["fp32"] if "fp32" not in wanted else []) + wanted:
            row = {"config": config, "precision": precision, "status": "planned"}
            try:
                check_engine(cls.name, tuple(cls.precisions), precision)
            except PrecisionError as exc:
                row.update(status="refused", reason=f"PrecisionError: {exc}")
            rows.append(row)
    return rows


def run_row(row: dict, args, prompts_file: Path) -> None:
    """One row in its own process (benchmarks/roofline_row.py); its answer is merged into ``row``."""
    cmd = [sys.executable, str(ROW), row["config"], row["precision"], args.model, str(args.threads),
           str(args.tokens), str(args.warmup), str(prompts_file)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, timeout=args.row_timeout,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired:
        row.update(status="failed", reason=f"not done after --row-timeout {args.row_timeout:.0f} s (killed)",
                   wall_s=time.perf_counter() - t0, load_average=os.getloadavg()[0])
        return
    row["wall_s"] = time.perf_counter() - t0
    row["load_average"] = os.getloadavg()[0]
    answer = [line[len(MARK):] for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not answer:
        row.update(status="failed", reason=f"row process exited with {proc.returncode} (its stderr is above)")
        return
    row.update(json.loads(answer[-1]))


def bandwidth_of(samples: list[dict]) -> float:
    """The roofline's bandwidth in bytes/s: the best ROOFLINE_KERNEL figure over the run's samples."""
    return max(s["kernels"][ROOFLINE_KERNEL]["best_gb_s"] for s in samples) * 1e9


def summarize(rows: list[dict], bytes_per_s: float) -> None:
    """Decode tokens/s, roofline and agreement of each row that ran (in place)."""
    from services.inference.equivalence import compare

    ids = {(r["config"], r["precision"]): [q["token_ids"] for q in r["requests"]] for r in rows if r["status"] == "ok"}
    for r in rows:
        if r["status"] != "ok":
            continue
        reqs = r["requests"]
        r["decode_tokens_per_s"] = decode_tokens_per_s([q["decode_s"] for q in reqs],
                                                       [q["completion_tokens"] for q in reqs])
        r["roofline_tokens_per_s"] = roofline_tokens_per_s(bytes_per_s, r["weight_bytes"])
        r["share_of_roofline"] = (r["decode_tokens_per_s"] / r["roofline_tokens_per_s"]
                                  if r["decode_tokens_per_s"] and r["roofline_tokens_per_s"] else None)
        mine = ids[(r["config"], r["precision"])]
        for key, ref in (("own_fp32", (r["config"], "fp32")), ("torch_fp32", ("torch-cpu", "fp32"))):
            if ref in ids:
                a = compare(r["config"], mine, "-".join(ref), ids[ref])
                r[f"agreement_{key}"] = {"reference": f"{ref[0]} {ref[1]}", "exact": a.exact, "prompts": a.prompts,
                                         "mean_prefix": a.mean_prefix}


def fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def agreement_cells(a: dict | None) -> list[str]:
    return ["-", "-"] if not a else [f"{a['exact']}/{a['prompts']}", f"{a['mean_prefix']:.1f}"]


def table(report: dict) -> str:
    bw = report["bandwidth"]
    lines = [f"\nRoofline benchmark: {report['model']}, {report['prompts']} paper prompts x {report['tokens']} new "
             f"tokens (ignore_eos), {report['threads']} threads, {os.cpu_count()} CPUs "
             f"({(report.get('host') or {}).get('cpu_model')}); bandwidth "
             f"{ROOFLINE_KERNEL} best {report['bandwidth_bytes_per_s'] / 1e9:.2f} GB/s (measured in this run); load "
             f"average {fmt(report.get('load_average_start'), '.1f')} at the start, "
             f"{fmt(report.get('load_average_end'), '.1f')} at the end",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in report["rows"]:
        ok = r["status"] == "ok"
        cells = [r["config"], r["precision"], r["status"],
                 fmt(r.get("weight_bytes") and r["weight_bytes"] / 1e6, ".1f") if ok else "-",
                 r.get("weight_bytes_source", "-").split(" (")[0] if ok else "-",
                 fmt(r.get("decode_tokens_per_s"), ".1f"), fmt(r.get("roofline_tokens_per_s"), ".1f"),
                 fmt(r.get("share_of_roofline") and 100 * r["share_of_roofline"], ".0f"),
                 *agreement_cells(r.get("agreement_own_fp32")), *agreement_cells(r.get("agreement_torch_fp32")),
                 fmt(r.get("ready_s"), ".1f"), fmt(r.get("load_average"), ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("\nbandwidth (GB/s = 1e9 B/s, STREAM counting, float64 arrays of "
                 f"{bw[0]['array_bytes'] / 2**20:.0f} MiB, {bw[0]['repeats']} repeats):")
    for when, s in zip(("before", "after"), bw):
        k = s["kernels"]
        figures = "; ".join(f"{name} best {k[name]['best_gb_s']:.2f} median {k[name]['median_gb_s']:.2f}"
                            for name in bandwidth.KERNEL_ARRAYS if name in k)
        lines.append(f"  {when}: {figures} (load average {s['load_average']:.1f})")
    if bw[0]["arrays_exceed_llc"] is False:
        llc_mib = bw[0]["llc_bytes"] / 2**20
        lines.append(f"  WARNING: arrays < {bandwidth.LLC_FACTOR} x the last-level cache ({llc_mib:.0f} MiB): this "
                     "is cache bandwidth, not memory's; raise --array-mib")
    for r in report["rows"]:
        if r["status"] != "ok":
            lines.append(f"  {r['config']} {r['precision']} {r['status']}: {r.get('reason')}")
        elif r.get("weight_bytes_source"):
            lines.append(f"  {r['config']} {r['precision']} weight bytes: {r['weight_bytes_source']}")
    lines.append("decode tok/s = tokens after each first token / time after it; roofline tok/s = bandwidth / "
                 "weight bytes; = own fp32 / = torch fp32: prompts whose ids equal that run's exactly, and "
                 "their mean common-prefix length in tokens")
    return "\n".join(lines)


def write_json(path: Path, report: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(path)


def print_saved(path: Path) -> int:
    """The table of a saved run; one that did not complete is summarized from what it recorded, and says so."""
    try:
        report = json.loads(path.read_text())
        if report.get("status") != "complete":
            report["bandwidth_bytes_per_s"] = bandwidth_of(report["bandwidth"])
            summarize(report["rows"], report["bandwidth_bytes_per_s"])
            print(f"INCOMPLETE run (status {report.get('status')!r}): the rows it finished; bandwidth from the "
                  f"{len(report['bandwidth'])} sample(s) it took")
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {path}: not a roofline report ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    print(table(report))
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    from services.inference.__main__ import default_threads

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"default {DEFAULT_MODEL}")
    p.add_argument("--configs", default="cpu", help="CPU configurations, a comma list or cpu (default: every one)")
    p.add_argument("--precisions", default="", help="a comma list (default: every precision each engine declares)")
    p.add_argument("--prompts", type=int, default=8, help="paper prompts in the workload (default 8)")
    p.add_argument("--tokens", type=int, default=64, help="new tokens per prompt (default 64)")
    p.add_argument("--threads", type=int, default=default_threads(), help="engine and bandwidth threads "
                                                                          "(default: every usable core)")
    p.add_argument("--warmup", type=int, default=3, help="the service's minimum warm-up passes (default 3)")
    p.add_argument("--array-mib", type=int, default=bandwidth.DEFAULT_ARRAY_MIB,
                   help=f"bandwidth arrays' size each (default {bandwidth.DEFAULT_ARRAY_MIB} MiB)")
    p.add_argument("--repeats", type=int, default=10, help="bandwidth repeats per kernel (default 10)")
    p.add_argument("--row-timeout", type=float, default=1800,
                   help="seconds one row may take, prepare included (default 1800); then it is a failed row")
    p.add_argument("--table", type=Path, metavar="JSON", help="print the table of a saved run (one cut short: "
                                                              "the rows it finished) and exit")
    p.add_argument("--out", type=Path, help="the JSON file (default results/roofline-<model>-<UTC time>.json)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from services.inference.configs import ConfigError, expand
    from services.inference.engines.precision import PrecisionError, check
    from services.inference.equivalence import PAPER_PROMPTS, read_prompts

    args = parse_args(argv)
    if args.table:
        return print_saved(args.table)
    try:
        configs = expand(args.configs)
        gpu = [c for c in configs if not c.endswith("-cpu")]
        if gpu:
            raise ConfigError(f"{', '.join(gpu)}: the roofline here is host memory bandwidth; give CPU "
                              "configurations only")
        precisions = [check(p.strip()) for p in args.precisions.split(",") if p.strip()] or None
        counts = (args.prompts, args.tokens, args.threads, args.repeats, args.array_mib, args.row_timeout)
        if min(counts) < 1 or args.tokens < 2:
            raise ValueError("--prompts, --threads, --repeats, --array-mib and --row-timeout must be at least 1, "
                             "--tokens at least 2")
    except (ConfigError, PrecisionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prompts = read_prompts(PAPER_PROMPTS)[: args.prompts]
    if len(prompts) < args.prompts:
        print(f"error: --prompts {args.prompts}: the paper set has {len(prompts)}", file=sys.stderr)
        return 2
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or ROOT / "results" / f"roofline-{args.model.replace(':', '-').replace('/', '-')}-{stamp}.json"
    if out.exists():
        print(f"error: {out} exists; results are never overwritten", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    from loadgen.hostinfo import git_describe, host_info

    rows = plan(configs, precisions)
    report = {"status": "running", "started": stamp, "host": host_info(), "source": git_describe(),
              "load_average_start": os.getloadavg()[0], "model": args.model, "prompts": len(prompts),
              "tokens": args.tokens, "threads": args.threads, "cpu_count": os.cpu_count(),
              "roofline_kernel": ROOFLINE_KERNEL, "bandwidth": [], "rows": rows}

    def sample_bandwidth(when: str) -> None:
        print(f"… bandwidth ({when}): copy, triad and read over {args.array_mib} MiB arrays, {args.threads} threads",
              file=sys.stderr, flush=True)
        s = bandwidth.measure(args.threads, args.array_mib, args.repeats)
        s.update(when=when, load_average=os.getloadavg()[0])
        report["bandwidth"].append(s)
        print(f"  triad best {s['kernels']['triad']['best_gb_s']:.2f} GB/s", file=sys.stderr, flush=True)

    sample_bandwidth("before")
    write_json(out, report)
    todo = [r for r in rows if r["status"] == "planned"]
    with tempfile.TemporaryDirectory(prefix="wattserve-roofline-") as tmp:
        prompts_file = Path(tmp) / "prompts.jsonl"  # the workload, and what each row warms up on
        prompts_file.write_text("".join(json.dumps({"new_prompt": p}) + "\n" for p in prompts))
        for i, row in enumerate(todo, 1):
            print(f"… [{i}/{len(todo)}] {row['config']} {row['precision']} (load average "
                  f"{os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
            run_row(row, args, prompts_file)
            print(f"  {row['status']}" + (f": {row.get('reason')}" if row["status"] != "ok" else
                                          f" in {row['wall_s']:.0f} s"), file=sys.stderr, flush=True)
            write_json(out, report)
    sample_bandwidth("after")
    report["bandwidth_bytes_per_s"] = bandwidth_of(report["bandwidth"])
    summarize(rows, report["bandwidth_bytes_per_s"])
    report["load_average_end"] = os.getloadavg()[0]
    report["status"] = "complete"
    write_json(out, report)
    print(table(report))
    print(f"\n(JSON: {out})")
    return 0 if all(r["status"] in ("ok", "refused") for r in rows) else 1


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    sys.exit(rc)
