"""The peer figure for benchmarks/serving.py: optimum-benchmark's own in-process ``generate`` latency on the
same model, in its own virtual environment (it pins its dependencies apart from ours). Prints one line.

    python benchmarks/optimum_peer.py [--model tiny] [--tokens 16] [--prompt-tokens 12] [--threads N]

The environment is made on first use at .venv-optimum (optimum-benchmark 0.6.0 with this project's torch
and transformers pins, so the engine is the same); a second run reuses it. The model is served from
wattserve's cache (``tiny`` is built there by the test suite or ``make models``).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-optimum"
OPTIMUM_BENCHMARK = "optimum-benchmark==0.6.0"

RUN = r'''
import json, sys
import torch
from optimum_benchmark import Benchmark, BenchmarkConfig, InferenceConfig, InlineConfig, PyTorchConfig
model, tokens, prompt_tokens, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
cfg = BenchmarkConfig(
    name="wattserve-peer", launcher=InlineConfig(),
    scenario=InferenceConfig(latency=True, memory=False, energy=False, duration=10, iterations=10,
                             input_shapes={"batch_size": 1, "sequence_length": prompt_tokens},
                             generate_kwargs={"max_new_tokens": tokens, "min_new_tokens": tokens}),
    backend=PyTorchConfig(model=model, device="cpu", task="text-generation"))
latency = Benchmark.launch(cfg).to_dict()["generate"]["latency"]
print(json.dumps({k: latency[k] for k in ("p50", "p90", "count", "unit")}))
'''


def pins() -> list[str]:
    """torch and transformers as requirements.txt pins them (the same engine as the service's)."""
    text = (ROOT / "requirements.txt").read_text()
    return [m.group(0) for m in re.finditer(r"^(torch|transformers)==\S+", text, re.M)]


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not (VENV / ".installed").exists():
        print(f"… making {VENV} ({OPTIMUM_BENCHMARK}, {', '.join(pins())}); once", file=sys.stderr, flush=True)
        venv.create(VENV, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        OPTIMUM_BENCHMARK, *pins()], check=True)
        (VENV / ".installed").touch()
    return python


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from services.inference.__main__ import default_threads
    from services.models.resolve import materialize, resolve

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--tokens", type=int, default=16, help="new tokens per generate (default 16, as serving.py)")
    p.add_argument("--prompt-tokens", type=int, default=12, help="prompt length (the paper prompts: 10-15)")
    p.add_argument("--threads", type=int, default=default_threads())
    args = p.parse_args()
    folder = materialize(resolve(args.model, build=False)).load_source
    out = subprocess.run([str(ensure_venv()), "-c", RUN, str(folder), str(args.tokens), str(args.prompt_tokens),
                          str(args.threads)], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"optimum-benchmark failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return 1
    lat = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"optimum-benchmark {OPTIMUM_BENCHMARK.split('==')[1]} in-process generate, {args.model}, "
          f"{args.prompt_tokens}+{args.tokens} tokens, {args.threads} threads: p50 {lat['p50'] * 1e3:.1f} ms, "
          f"p90 {lat['p90'] * 1e3:.1f} ms ({lat['count']} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
