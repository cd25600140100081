"""``python -m services.models.prepare --model M --config SEL``: build model artifacts ahead of time.

Exports to ONNX / OpenVINO IR / TorchScript land in the cache keyed by model, revision, engine,
precision and library versions, so a benchmark never times an export. The service prepares on
first use too; this command does it up front (e.g. ``make models``), with progress.
"""

from __future__ import annotations

import argparse
import sys
import time

from services.inference.configs import ConfigError, ServingConfig, expand
from services.models.resolve import ModelError, materialize, resolve


def main(argv=None) -> int:
    from services.inference.__main__ import default_threads
    from services.inference.engines import EngineError, EngineSettings, engine_class
    from services.models.cache import cache_root

    p = argparse.ArgumentParser(prog="python -m services.models.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="tiny, shape:<hf id>, a registry name, a HF id or a folder")
    p.add_argument("--config", default="cpu", help="one, a comma list, cpu, cuda or all (default cpu)")
    p.add_argument("--revision", default=None)
    p.add_argument("--trust-remote-code", action="store_true")
    args = p.parse_args(argv)
    try:
        configs = expand(args.config)
        model = materialize(resolve(args.model, revision=args.revision,
                                    trust_remote_code=args.trust_remote_code))
    except (ConfigError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = EngineSettings(threads=default_threads(), cache_dir=cache_root())
    print(f"model {model.name}: {model.identity}")
    status = 0
    for i, name in enumerate(configs, 1):
        t0 = time.time()
        try:
            engine = engine_class(ServingConfig.parse(name).engine)(model, ServingConfig.parse(name), settings)
            path = engine.prepare(progress=lambda m: print("   ", m))
        except (EngineError, Exception) as exc:  # report every config, then fail
            print(f"[{i}/{len(configs)}] {name}: FAILED: {type(exc).__name__}: {exc}")
            status = 1
            continue
        print(f"[{i}/{len(configs)}] {name}: {path or 'no artifact needed'} ({time.time() - t0:.1f}s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
