"""The FastAPI app: the same HTTP contract for every configuration.

The model loads in a background thread started from ``lifespan``, so ``/health`` answers at once
and ``/ready`` says 503 until the model is loaded and warmed up. Generation endpoints are plain
``def``: FastAPI runs them in its thread pool and the service serializes them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.inference.metrics import ServiceMetrics
from services.inference.schemas import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    CompletionUsage,
    GenerateRequest,
    GenerateResponse,
)
from services.inference.service import InferenceService, InvalidRequest


def create_app(service: InferenceService, on_load_failure: Callable[[], None] | None = None) -> FastAPI:
    metrics = ServiceMetrics()

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
            config=service.config.name, engine=service.config.engine, provider=service.config.provider,
            model=service.model.name, revision=service.model.content_hash or service.model.revision or "",
            precision=service.settings.precision, kv_cache=str(info["kv_cache"]).lower(),
        ).set(1)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=load, name="model-load", daemon=True).start()
        yield

    app = FastAPI(title="wattserve inference", version="1", lifespan=lifespan,
                  summary="One serving configuration (engine × provider) of one code model.")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        endpoint = request.url.path
        if endpoint in ("/v1/generate", "/v1/completions"):
            metrics.requests.labels(endpoint, "422").inc()
            metrics.errors.labels(endpoint, "invalid").inc()
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": errors})

    def run(endpoint: str, prompt: str, **limits):
        if not service.ready:
            metrics.requests.labels(endpoint, "503").inc()
            metrics.errors.labels(endpoint, "not_ready").inc()
            raise HTTPException(503, f"model not ready ({service.state})")
        metrics.in_flight.inc()
        try:
            gen = service.generate(prompt, **limits)
        except InvalidRequest as exc:
            metrics.requests.labels(endpoint, "422").inc()
            metrics.errors.labels(endpoint, "invalid").inc()
            raise HTTPException(422, str(exc)) from None
        except Exception as exc:
            metrics.requests.labels(endpoint, "500").inc()
            metrics.errors.labels(endpoint, "engine").inc()
            raise HTTPException(500, f"generation failed: {type(exc).__name__}: {exc}") from None
        finally:
            metrics.in_flight.dec()
        metrics.requests.labels(endpoint, "200").inc()
        metrics.latency.labels(endpoint).observe(gen.latency_s)
        metrics.prompt_tokens.inc(gen.prompt_tokens)
        metrics.generated_tokens.inc(gen.completion_tokens)
        return gen

    @app.post("/v1/generate", response_model=GenerateResponse)
    def generate(req: GenerateRequest) -> GenerateResponse:
        gen = run("/v1/generate", req.prompt, max_new_tokens=req.max_new_tokens,
                  max_length=req.max_length, ignore_eos=req.ignore_eos)
        return GenerateResponse(
            text=gen.text, token_ids=gen.token_ids, prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens, started_at=gen.started_at,
            finished_at=gen.finished_at, latency_s=gen.latency_s, config=service.config.name,
            model=service.model.name,
        )

    @app.post("/v1/completions", response_model=CompletionResponse)
    def completions(req: CompletionRequest) -> CompletionResponse:
        if req.model not in (None, service.model.name, service.model.source):
            metrics.requests.labels("/v1/completions", "404").inc()
            raise HTTPException(404, f"model {req.model!r} is not served here; this service serves "
                                     f"{service.model.name!r}")
        gen = run("/v1/completions", req.prompt, max_new_tokens=req.max_tokens)
        return CompletionResponse(
            id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=service.model.name,
            choices=[CompletionChoice(text=gen.text, finish_reason="stop" if gen.hit_eos else "length")],
            usage=CompletionUsage(prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                                  total_tokens=gen.prompt_tokens + gen.completion_tokens),
        )

    @app.get("/health")
    def health() -> dict:
        return {"status": "alive", "state": service.state}

    @app.get("/ready")
    def ready(response: Response) -> dict:
        if not service.ready:
            response.status_code = 503
        return {"ready": service.ready, "state": service.state, "error": service.error}

    @app.get("/info")
    def info() -> dict:
        return service.info()

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
