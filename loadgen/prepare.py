"""``python -m loadgen.prepare --config C --model M``: make the model and its engine artifact ready.

Run by the protocol as a child process before a run's ``load`` phase, so exports (ONNX, OpenVINO
IR, TorchScript) are never inside a measured window, and the bench process itself never imports
torch / onnxruntime / openvino (their memory and threads would otherwise sit beside every run).
Prints one JSON line on stdout: ``{"model": {...}, "artifact": path|null, "seconds": s}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def prepare(config: str, model: str, *, threads: int, precision: str = "fp32", revision: str | None = None,
            trust_remote_code: bool = False, progress=print) -> dict:
    from services.inference.configs import ServingConfig
    from services.inference.engines import EngineSettings, engine_class
    from services.models.cache import cache_root
    from services.models.resolve import materialize, resolve

    t0 = time.time()
    spec = materialize(resolve(model, revision=revision, trust_remote_code=trust_remote_code, progress=progress),
                       progress=progress)
    cfg = ServingConfig.parse(config)
    settings = EngineSettings(threads=threads, precision=precision, cache_dir=cache_root())
    artifact = engine_class(cfg.engine)(spec, cfg, settings).prepare(progress=progress)
    return {"model": spec.describe(), "artifact": str(artifact) if artifact else None, "seconds": time.time() - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadgen.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--revision", default=None)
    p.add_argument("--trust-remote-code", action="store_true")
    args = p.parse_args(argv)
    result = prepare(args.config, args.model, threads=args.threads, precision=args.precision,
                     revision=args.revision, trust_remote_code=args.trust_remote_code,
                     progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
