"""How much work does sending the stop sequences save on the humaneval workload?

    python benchmarks/humaneval_stop.py [--config torch-cpu] [--model tiny] [--max-new-tokens 192] [--limit N]

Serves MODEL with CONFIG (a real service, native, on a free loopback port), sends every HumanEval prompt
that fits the context twice, interleaved - once with the four stop strings the workload sends
(loadgen/humaneval.py SENT_STOPS), once without any (the post-hoc cut alone, as before the service had
``stop``) - and prints the tokens generated and the service's generation time of each way, and how many
completions the stop ended early. It also checks the equal-work rule: the text scored (cut at all five
stop sequences) must be the same both ways; a difference is printed and the exit status is 1.
Times are the service's own ``latency_s`` (no energy here: the bench measures that).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadgen import humaneval  # noqa: E402
from loadgen.prompts import load_prompts  # noqa: E402
from loadgen.runners import NativeService  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="torch-cpu")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--max-new-tokens", type=int, default=humaneval.DEFAULT_MAX_NEW_TOKENS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="only the first N prompts that fit (0: all)")
    args = ap.parse_args(argv)

    from services.models.resolve import resolve

    spec = resolve(args.model)
    fitted, entry = humaneval.fit_prompts(load_prompts("humaneval"), spec.load_source, args.max_new_tokens)
    items = fitted.items[:args.limit] if args.limit else fitted.items
    log = Path("/tmp") / f"humaneval-stop-{args.config}-{int(time.time())}.log"
    service = NativeService(args.config, args.model, threads=args.threads, precision="fp32", log_path=log,
                            warmup_prompts=load_prompts("humaneval").path)
    totals = {"stop": [0, 0.0], "post hoc": [0, 0.0]}
    ended, differ = 0, []
    try:
        service.wait_ready(900)
        client = httpx.Client(base_url=service.url, timeout=300)
        for i, p in enumerate(items):
            body = {"prompt": p.text, "max_new_tokens": args.max_new_tokens}
            ways = [("stop", {**body, "stop": list(humaneval.SENT_STOPS)}), ("post hoc", body)]
            if i % 2:  # interleaved: neither way always runs first
                ways.reverse()
            out = {}
            for name, b in ways:
                r = client.post("/v1/generate", json=b)
                r.raise_for_status()
                out[name] = r.json()
                totals[name][0] += out[name]["completion_tokens"]
                totals[name][1] += out[name]["latency_s"]
            ended += out["stop"]["finish_reason"] == "stop"
            if humaneval.cut_at_stop(out["stop"]["text"]) != humaneval.cut_at_stop(out["post hoc"]["text"]):
                differ.append(p.task_id)
        client.close()
    finally:
        service.stop()
    n = len(items)
    (tok_s, time_s), (tok_p, time_p) = totals["stop"], totals["post hoc"]
    print(f"{args.model} {args.config}: {n} HumanEval prompts ({entry['skipped_count']} of 164 skipped: too long), "
          f"max_new_tokens {args.max_new_tokens}")
    print(f"  stop sent ({', '.join(map(repr, humaneval.SENT_STOPS))}): {tok_s} tokens, {time_s:.1f} s generating; "
          f"{ended} completion(s) ended at a stop string")
    print(f"  post-hoc cut only:  {tok_p} tokens, {time_p:.1f} s generating")
    if tok_p:
        print(f"  saved by sending stop: {tok_p - tok_s} tokens ({100 * (tok_p - tok_s) / tok_p:.1f} %), "
              f"{time_p - time_s:.1f} s ({100 * (time_p - time_s) / time_p:.1f} %) of generation")
    print(f"  text scored equal both ways: {'yes' if not differ else 'NO: ' + ', '.join(differ)}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
