"""Do the engines do the same work? The same prompts through every configuration, compared to torch.

``python -m services.inference.equivalence --model tiny --configs cpu`` prints, per configuration,
the exact-match rate and the mean common-prefix length of generated token ids against the torch
reference of the same provider (torch-cpu for *-cpu, torch-cuda for *-cuda). Exit status 1 when
any configuration differs, so CI and scripts can rely on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from analysis.quantities import agreement, reference_config
from services.inference.configs import ConfigError, ServingConfig, expand, require_cuda

PAPER_PROMPTS = Path(__file__).resolve().parents[2] / "loadgen" / "prompts" / "paper-prompts.jsonl"


@dataclass
class Agreement:
    config: str
    reference: str
    prompts: int
    exact: int
    mean_prefix: float  # mean common-prefix length, in tokens
    mean_reference_len: float

    @property
    def exact_rate(self) -> float:
        return self.exact / self.prompts if self.prompts else float("nan")


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def compare(config: str, outputs: list[list[int]], reference: str, ref_outputs: list[list[int]]) -> Agreement:
    if len(outputs) != len(ref_outputs):
        raise ValueError(f"{config} has {len(outputs)} outputs, {reference} has {len(ref_outputs)}")
    n = len(outputs)
    return Agreement(
        config=config,
        reference=reference,
        prompts=n,
        exact=agreement(dict(enumerate(outputs)), dict(enumerate(ref_outputs)))[0],
        mean_prefix=sum(common_prefix(a, b) for a, b in zip(outputs, ref_outputs)) / max(n, 1),
        mean_reference_len=sum(len(b) for b in ref_outputs) / max(n, 1),
    )


def reference_of(config: str) -> str:
    return reference_config(ServingConfig.parse(config).name)


def read_prompts(path: Path) -> list[str]:
    return [json.loads(line)["new_prompt"] for line in path.read_text().splitlines() if line.strip()]


def run_config(config: str, model: str, prompts: list[str], threads: int, max_length: int,
               progress=print) -> list[list[int]]:
    """Load one configuration in-process and generate every prompt (greedy, the service's defaults)."""
    from services.inference.engines import EngineSettings
    from services.inference.service import InferenceService
    from services.models.cache import cache_root
    from services.models.resolve import resolve

    cfg = ServingConfig.parse(config)
    service = InferenceService(cfg, resolve(model, progress=progress),
                               EngineSettings(threads=threads, cache_dir=cache_root()), warmup=1)
    service.load()
    out, t0 = [], time.time()
    for i, prompt in enumerate(prompts, 1):
        out.append(service.generate(prompt, max_length=max_length).token_ids)
        if i % 20 == 0 or i == len(prompts):
            progress(f"  {config}: {i}/{len(prompts)} prompts  {time.time() - t0:.1f}s")
    return out


def main(argv=None) -> int:
    from services.inference.__main__ import default_threads

    p = argparse.ArgumentParser(prog="python -m services.inference.equivalence", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--configs", default="cpu", help="one, a comma list, cpu, cuda or all (default cpu)")
    p.add_argument("--prompts", type=Path, default=PAPER_PROMPTS, help="JSONL with new_prompt fields")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=default_threads())
    args = p.parse_args(argv)
    try:
        configs = expand(args.configs)
        for c in configs:
            if c.endswith("-cuda"):
                require_cuda()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prompts = read_prompts(args.prompts)[: args.limit]
    needed = sorted({reference_of(c) for c in configs} | set(configs), key=lambda c: (not c.startswith("torch"), c))
    outputs = {c: run_config(c, args.model, prompts, args.threads, args.max_length) for c in needed}
    rows = [compare(c, outputs[c], reference_of(c), outputs[reference_of(c)]) for c in configs]
    print(f"\nOutput equivalence, model {args.model}, {len(prompts)} prompts, greedy, max_length {args.max_length}")
    print(f"{'config':<12} {'reference':<11} {'exact match':>12} {'mean common prefix':>22}")
    for r in rows:
        print(f"{r.config:<12} {r.reference:<11} {r.exact:>4}/{r.prompts:<4} {r.exact_rate:>4.0%} "
              f"{r.mean_prefix:>10.1f} of {r.mean_reference_len:.1f} tokens")
    return 0 if all(r.exact == r.prompts for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
