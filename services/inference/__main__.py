"""``python -m services.inference --config CONFIG --model MODEL``: serve one configuration.

Every option has an environment-variable equivalent (``WATTSERVE_<OPTION>``) for containers.
Bad configurations and a port another process holds fail here, before anything loads, with exit 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import logging
import os
import socket
import sys
from pathlib import Path

from services.inference.configs import CONFIGS, UNSUPPORTED, ConfigError, ServingConfig, require_cuda
from services.inference.engines import EngineSettings, engine_class
from services.inference.engines.precision import check_serving
from services.inference.schemas import DEFAULT_MAX_BODY_BYTES
from services.inference.service import PAPER_PROMPTS
from services.models.cache import cache_root
from services.models.resolve import ModelError, resolve


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def env(name: str, default=None):
    return os.environ.get(f"WATTSERVE_{name}", default)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m services.inference",
        description="Serve one code model under one serving configuration (engine-provider) over HTTP.",
        epilog=f"configurations: {', '.join(CONFIGS)} (not: {', '.join(UNSUPPORTED)}). "
        "Models: tiny, shape:<hf id>, a registry name, a Hugging Face id or a local folder.",
    )
    p.add_argument("--config", default=env("CONFIG"), required=env("CONFIG") is None,
                   help="engine-provider, e.g. onnx-cpu [WATTSERVE_CONFIG]")
    p.add_argument("--model", default=env("MODEL"), required=env("MODEL") is None,
                   help="model to serve [WATTSERVE_MODEL]")
    p.add_argument("--revision", default=env("REVISION"), help="hub revision [WATTSERVE_REVISION]")
    p.add_argument("--host", default=env("HOST", "127.0.0.1"), help="bind address (default 127.0.0.1) [WATTSERVE_HOST]")
    p.add_argument("--port", type=int, default=int(env("PORT", 8000)), help="port (default 8000) [WATTSERVE_PORT]")
    p.add_argument("--threads", type=int, default=int(env("THREADS", default_threads())),
                   help="CPU threads for every engine (default: all cores) [WATTSERVE_THREADS]")
    p.add_argument("--precision", default=env("PRECISION", "fp32"), help="inference precision: fp32 (default), or a lower one the engine declares in its "
                   "precisions; a refusal names them [WATTSERVE_PRECISION]")
    p.add_argument("--warmup", type=int, default=int(env("WARMUP_REQUESTS", 3)),
                   help="minimum warm-up passes before /ready says 200: each pass runs one short generation per "
                        "distinct prompt length of --warmup-prompts on the serving thread; passes go on (at most 8) "
                        "until one is no faster than the last; 0: none. Default 3: TorchScript compiles in two passes in a row "
                        "(a profiled run, then the optimized graph) [WATTSERVE_WARMUP_REQUESTS]")
    p.add_argument("--warmup-prompts", type=Path, default=Path(env("WARMUP_PROMPTS", str(PAPER_PROMPTS))),
                   help="JSONL workload whose prompt lengths warm-up covers (default: the paper prompts) "
                        "[WATTSERVE_WARMUP_PROMPTS]")
    p.add_argument("--trust-remote-code", action="store_true",
                   default=env("TRUST_REMOTE_CODE", "0").lower() in ("1", "true", "yes"),
                   help="allow a model's own Python code to run (off by default) [WATTSERVE_TRUST_REMOTE_CODE]")
    p.add_argument("--max-body-bytes", type=int, default=int(env("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
                   help="larger request bodies are refused with 413 before they are read (default 1 MiB) "
                        "[WATTSERVE_MAX_BODY_BYTES]")
    p.add_argument("--log-level", default=env("LOG_LEVEL", "info"))
    return p.parse_args(argv)


def http_stack() -> dict[str, str]:
    """What uvicorn parses HTTP and runs its event loop with: httptools and uvloop (requirements.txt; each
    takes a few hundred microseconds off every request on a loaded 2-core host, benchmarks/serving.py),
    else the pure-Python h11 and asyncio where they are not installed. Recorded in /info (run.json)."""
    def has(module: str) -> bool:
        return importlib.util.find_spec(module) is not None

    return {"http": "httptools" if has("httptools") else "h11", "loop": "uvloop" if has("uvloop") else "asyncio"}


class CannotListen(OSError):
    """(host, port) cannot be listened on; the message names them and says what to do."""


def listen(host: str, port: int) -> socket.socket:
    """Bind and listen now, before the model loads, so a taken port fails in a second, not after a
    load. SO_REUSEADDR as uvicorn sets it: a port in TIME_WAIT is free, one another process listens on
    is not (no SO_REUSEPORT: the port is never shared, nobody else's socket is touched)."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise CannotListen(f"cannot listen on {host}:{port}: unknown address ({exc.strerror}); check --host") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        why = "another process is listening there" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise CannotListen(f"cannot listen on {host}:{port}: {why}; choose another port with --port "
                        "[WATTSERVE_PORT]") from None
    return sock


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = ServingConfig.parse(args.config)
        if args.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
        if args.max_body_bytes < 1:
            raise ValueError(f"--max-body-bytes must be >= 1, got {args.max_body_bytes}")
        sock = listen(args.host, args.port)  # before anything slow: CUDA probe, model hash, load
        if config.provider == "cuda":
            require_cuda()
        model = resolve(args.model, revision=args.revision, trust_remote_code=args.trust_remote_code, build=False)
        settings = EngineSettings(threads=args.threads, precision=args.precision, cache_dir=cache_root())
        check_serving(engine_class(config.engine), config.provider, args.precision)  # before the load
        problem = engine_class(config.engine).missing()  # an opt-in engine's library not installed
        if problem:
            raise ConfigError(problem)
    except (ConfigError, ModelError, ValueError, CannotListen) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    from services.inference.app import create_app
    from services.inference.service import InferenceService

    failed = []
    server: uvicorn.Server | None = None

    def on_load_failure() -> None:
        failed.append(True)
        if server is not None:
            server.should_exit = True

    service = InferenceService(config, model, settings, warmup=args.warmup, warmup_prompts=args.warmup_prompts)
    stack = http_stack()
    service.http_server = {"server": "uvicorn", "version": uvicorn.__version__, **stack}
    app = create_app(service, on_load_failure, max_body_bytes=args.max_body_bytes)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                           access_log=False, http=stack["http"], loop=stack["loop"]))
    logging.getLogger("wattserve.inference").info("listening on %s:%s", *sock.getsockname()[:2])
    server.run(sockets=[sock])
    if failed:
        print(f"error: could not load {args.model} with {config.name}; see the log above", file=sys.stderr)
        return 1
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
