"""Do the engines do the same work? The same prompts through every configuration, compared to torch.

``python -m services.inference.equivalence --model tiny --configs cpu`` prints, per configuration,
the exact-match rate and the mean common-prefix length of generated token ids against the torch fp32
reference of the same provider (torch-cpu for *-cpu, torch-cuda for *-cuda). ``--precision int8`` (or a
label such as ``onnx-cpu@int8``) runs a lower precision and compares it with torch fp32 and with the same
configuration at fp32. Exit status 1 when an fp32 configuration differs (it must not); a lower
precision is expected to change some tokens, so its agreement is shown, not judged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from analysis.quantities import agreement, reference_config
from services.inference.configs import ConfigError, require_cuda
from services.inference.variants import Variant, expand_variants, left_out_of_groups

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


def references_of(v: Variant) -> list[Variant]:
    """torch fp32 on the same provider, and below fp32 also the same configuration at fp32."""
    refs = [Variant(reference_config(v.config))]
    if v.precision != "fp32" and Variant(v.config) not in refs:
        refs.append(Variant(v.config))
    return [r for r in refs if r != v]


def read_prompts(path: Path) -> list[str]:
    return [json.loads(line)["new_prompt"] for line in path.read_text().splitlines() if line.strip()]


def run_config(variant: Variant, model: str, prompts: list[str], threads: int, max_length: int,
               progress=print) -> list[list[int]]:
    """Load one configuration at its precision in-process and generate every prompt (greedy, the
    service's defaults)."""
    from services.inference.engines import EngineSettings
    from services.inference.service import InferenceService
    from services.models.cache import cache_root
    from services.models.resolve import resolve

    from services.inference.configs import ServingConfig

    cfg, config = ServingConfig.parse(variant.config), variant.label
    service = InferenceService(cfg, resolve(model, progress=progress),
                               EngineSettings(threads=threads, precision=variant.precision, cache_dir=cache_root()),
                               warmup=1)
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
    p.add_argument("--configs", default="cpu", help="one, a comma list, cpu, cuda or all (default cpu); a name may "
                                                    "carry its precision: onnx-cpu@int8")
    p.add_argument("--precision", default="fp32", help="fp32 (default), a lower one, or a comma list: every "
                                                       "configuration at each [make equivalence PRECISION=]")
    p.add_argument("--prompts", type=Path, default=PAPER_PROMPTS, help="JSONL with new_prompt fields")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=default_threads())
    args = p.parse_args(argv)
    try:
        variants = expand_variants(args.configs, args.precision)
        for config, why in left_out_of_groups(args.configs).items():
            print(f"note: {config} left out ({why})", file=sys.stderr)
        if any(v.config.endswith("-cuda") for v in variants):
            require_cuda()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prompts = read_prompts(args.prompts)[: args.limit]
    needed = list(dict.fromkeys([r for v in variants for r in references_of(v)] + variants))
    needed.sort(key=lambda v: (not v.config.startswith("torch"), v.precision != "fp32", v.label))
    outputs = {v: run_config(v, args.model, prompts, args.threads, args.max_length) for v in needed}
    rows = [(v, compare(v.label, outputs[v], r.label, outputs[r])) for v in variants for r in references_of(v)]
    print(f"\nOutput equivalence, model {args.model}, {len(prompts)} prompts, greedy, max_length {args.max_length}")
    width = max([len(v.label) for v, _ in rows] + [12])
    print(f"{'config':<{width}} {'reference':<11} {'exact match':>12} {'mean common prefix':>22}")
    for _, r in rows:
        print(f"{r.config:<{width}} {r.reference:<11} {r.exact:>4}/{r.prompts:<4} {r.exact_rate:>4.0%} "
              f"{r.mean_prefix:>10.1f} of {r.mean_reference_len:.1f} tokens")
    lower = [v.label for v, _ in rows if v.precision != "fp32"]
    if lower:
        print(f"below fp32 ({', '.join(dict.fromkeys(lower))}): agreement shown, not judged (a lower precision "
              "may change tokens; the exit status judges fp32 only)")
    return 0 if all(r.exact == r.prompts for v, r in rows if v.precision == "fp32") else 1


if __name__ == "__main__":
    sys.exit(main())
