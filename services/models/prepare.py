"""``python -m services.models.prepare --model M --config SEL``: build model artifacts ahead of time.

Exports to ONNX / OpenVINO IR / TorchScript land in the cache keyed by model, revision, engine,
precision and library versions, so a benchmark never times an export. The service prepares on
first use too; this command does it up front (e.g. ``make models``), with progress.
"""

from __future__ import annotations

import argparse
import sys
import time

from services.inference.configs import ConfigError, ServingConfig
from services.inference.variants import expand_variants, left_out_of_groups
from services.models.resolve import ModelError, materialize, resolve


def main(argv=None) -> int:
    from services.inference.__main__ import default_threads
    from services.inference.engines import EngineError, EngineSettings, engine_class
    from services.models.cache import cache_root

    p = argparse.ArgumentParser(prog="python -m services.models.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="tiny, shape:<hf id>, a registry name, a HF id or a folder")
    p.add_argument("--config", default="cpu", help="one, a comma list, cpu, cuda or all (default cpu); a name may "
                                                   "carry its precision: onnx-cpu@int8")
    p.add_argument("--precision", default="fp32", help="fp32 (default), a lower one, or a comma list [make models "
                                                       "PRECISION=]")
    p.add_argument("--revision", default=None)
    p.add_argument("--trust-remote-code", action="store_true")
    args = p.parse_args(argv)
    try:
        variants = expand_variants(args.config, args.precision)
        for config, why in left_out_of_groups(args.config).items():
            print(f"note: {config} left out ({why})", file=sys.stderr)
        model = materialize(resolve(args.model, revision=args.revision,
                                    trust_remote_code=args.trust_remote_code))
    except (ConfigError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"model {model.name}: {model.identity}")
    status = 0
    for i, variant in enumerate(variants, 1):
        t0, name, cfg = time.time(), variant.label, ServingConfig.parse(variant.config)
        settings = EngineSettings(threads=default_threads(), precision=variant.precision, cache_dir=cache_root())
        try:
            engine = engine_class(cfg.engine)(model, cfg, settings)
            path = engine.prepare(progress=lambda m: print("   ", m))
        except (EngineError, Exception) as exc:  # report every config, then fail
            print(f"[{i}/{len(variants)}] {name}: FAILED: {type(exc).__name__}: {exc}")
            status = 1
            continue
        print(f"[{i}/{len(variants)}] {name}: {path or 'no artifact needed'} ({time.time() - t0:.1f}s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
