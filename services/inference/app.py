"""The FastAPI app: the same HTTP contract for every configuration.

The model loads in a background thread started from ``lifespan``, so ``/health`` answers at once
and ``/ready`` says 503 until the model is loaded and warmed up. Generation endpoints are ``async``
and await their job on the service's serving thread; a request whose body validates reaches them
through the fast path (fast_path.py), any other through FastAPI. Every status the service can answer
is in its OpenAPI schema (tests/inference/test_fuzz_openapi.py holds it to that).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.inference.calls import GENERATION_ENDPOINTS, GenerationCalls, error_responses
from services.inference.fast_path import FastPath, direct_routes
from services.inference.guard import RequestGuard
from services.inference.metrics import ServiceMetrics
from services.inference.openai_routes import add_openai_routes
from services.inference.schemas import (
    DEFAULT_MAX_BODY_BYTES,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    ReadyResponse,
    stop_list,
    stream_components,
)
from services.inference.service import InferenceService
from services.inference.variants import label as variant_label

log = logging.getLogger("wattserve.inference")


def create_app(service: InferenceService, on_load_failure: Callable[[], None] | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    metrics = ServiceMetrics()
    calls = GenerationCalls(service, metrics)
    started = time.time()

    def load() -> None:
        try:
            service.load()
        except Exception:
            if on_load_failure:
                on_load_failure()
            return
        metrics.ready.set(1)
        metrics.load_seconds.set(service.load_seconds or 0)
        info = service.info()
        metrics.model_info.labels(
            # the variant (onnx-cpu, onnx-cpu@int8): the dashboards' $config is the bench's label
            config=variant_label(service.config.name, service.settings.precision), engine=service.config.engine,
            provider=service.config.provider,
            model=service.model.name, revision=service.model.content_hash or service.model.revision or "",
            precision=service.settings.precision, kv_cache=str(info["kv_cache"]).lower(),
        ).set(1)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=load, name="model-load", daemon=True).start()
        yield

    app = FastAPI(title="wattserve inference", version="1", lifespan=lifespan,
                  summary="One serving configuration (engine × provider) of one code model.")

    # the guard is added last, so it is outermost: the fast path only sees bodies the guard let through
    app.add_middleware(FastPath, routes=lambda: direct_routes(app, GENERATION_ENDPOINTS),
                       http_error=lambda: app.exception_handlers[StarletteHTTPException])
    app.add_middleware(RequestGuard, max_bytes=max_body_bytes, on_refused=calls.refused)

    def invalid(request: Request, errors: list[dict]) -> JSONResponse:
        calls.refused(request.url.path, 422)
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = []
        for e in exc.errors():
            msg = e.get("msg", "")
            if e.get("type") == "json_invalid" and (e.get("ctx") or {}).get("error"):
                msg = f"{msg}: {e['ctx']['error']}"  # say where the JSON breaks, not only that it does
            elif e.get("type") == "model_attributes_type" and tuple(e.get("loc", ())) == ("body",):
                got = {list: "an array", str: "a string", bool: "a boolean", type(None): "null",
                       bytes: "bytes that are not JSON"}.get(type(e.get("input")), "a number")
                msg = f"the body must be a JSON object, got {got}"
            errors.append({"loc": list(e.get("loc", ())), "msg": msg, "type": e.get("type", "")})
        return invalid(request, errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        cause = exc.__cause__
        if exc.status_code == 400 and cause is not None:
            # FastAPI says only "There was an error parsing the body" (400) for a body json cannot even
            # read (not UTF-8, a 5000-digit number, nesting too deep): a 422 like any other bad body
            if isinstance(cause, UnicodeDecodeError):
                why = f"is not UTF-8 (byte {cause.start})"
            elif isinstance(cause, RecursionError):
                why = "is nested too deeply"
            elif isinstance(cause, ValueError) and "digits" in str(cause):
                why = "has a number with too many digits"
            else:
                why = f"could not be parsed ({type(cause).__name__})"
            return invalid(request, [{"loc": ["body"], "msg": f"request body {why}; send one JSON object",
                                      "type": "json_invalid"}])
        return await http_exception_handler(request, exc)

    @app.post("/v1/generate", response_model=GenerateResponse, responses=error_responses(413, 415, 500, 503))
    async def generate(req: GenerateRequest) -> Response:
        return await calls.answer(
            "/v1/generate", req.prompt, lambda gen: GenerateResponse(
                text=gen.text, token_ids=gen.token_ids, prompt_tokens=gen.prompt_tokens,
                completion_tokens=gen.completion_tokens, started_at=gen.started_at,
                finished_at=gen.finished_at, latency_s=gen.latency_s, first_token_at=gen.first_token_at,
                decode_s=gen.decode_s, finish_reason=gen.finish_reason, config=service.config.name,
                model=service.model.name),
            max_new_tokens=req.max_new_tokens, max_length=req.max_length, ignore_eos=req.ignore_eos,
            stop=stop_list(req.stop))

    add_openai_routes(app, calls, started)
    plain_openapi = app.openapi

    def openapi() -> dict:
        """FastAPI's schema plus the streamed chunks' models, which the event-stream responses reference."""
        if app.openapi_schema is None:
            plain_openapi().setdefault("components", {}).setdefault("schemas", {}).update(stream_components())
        return app.openapi_schema

    app.openapi = openapi

    @app.get("/health", response_model=HealthResponse)
    def health() -> dict:
        return {"status": "alive", "state": service.state}

    @app.get("/ready", response_model=ReadyResponse,
             responses={503: {"model": ReadyResponse, "description": "not loaded yet, or loading failed"}})
    def ready(response: Response) -> dict:
        if not service.ready:
            response.status_code = 503
        return {"ready": service.ready, "state": service.state, "error": service.error}

    @app.get("/info")
    def info() -> dict:
        return service.info()

    @app.get("/metrics", response_class=PlainTextResponse,
             responses={200: {"description": "Prometheus text exposition format"}})
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
