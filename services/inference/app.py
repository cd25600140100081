"""The FastAPI app: the same HTTP contract for every configuration.

The model loads in a background thread started from ``lifespan``, so ``/health`` answers at once
and ``/ready`` says 503 until the model is loaded and warmed up. Generation endpoints are plain
``def``: FastAPI runs them in its thread pool and the service serializes them. Every status the
service can answer is in its OpenAPI schema (tests/inference/test_fuzz_openapi.py holds it to that).
"""

from __future__ import annotations

import email.message
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.inference.metrics import ServiceMetrics
from services.inference.schemas import (
    DEFAULT_MAX_BODY_BYTES,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    CompletionUsage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatReply,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    ModelCard,
    ModelList,
    ReadyResponse,
    stop_list,
)
from services.inference.service import InferenceService, InvalidRequest

log = logging.getLogger("wattserve.inference")

GENERATION_ENDPOINTS = ("/v1/generate", "/v1/completions", "/v1/chat/completions")


def is_json(content_type: str | None) -> bool:
    """application/json or application/*+json, parameters allowed (as FastAPI decides what it parses)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class RequestGuard:
    """Pure ASGI middleware in front of the app: a body over ``max_bytes`` gets 413 before it is
    buffered (at once from Content-Length, else counted as it streams in), and a POST body that is not
    JSON gets 415. Without it FastAPI reads any body whole into memory before validating it."""

    def __init__(self, app, max_bytes: int, on_refused: Callable[[str, int], None] | None = None) -> None:
        self.app, self.max_bytes, self.on_refused = app, max_bytes, on_refused

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":  # the only method that takes a body here
            return await self.app(scope, receive, send)
        path, headers = scope["path"], Headers(scope=scope)
        declared = headers.get("content-length", "").strip()
        declared_n = int(declared) if declared.isdigit() else None
        if declared_n is not None and declared_n > self.max_bytes:
            return await self.refuse(send, path, 413, self.too_large(f"{declared_n} bytes"))
        has_body = bool(declared_n) or "chunked" in headers.get("transfer-encoding", "").lower()
        if has_body and not is_json(headers.get("content-type")):
            return await self.refuse(send, path, 415, "the body must be JSON, sent with Content-Type: "
                                     f"application/json (got {headers.get('content-type') or 'no Content-Type'})")
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if self.on_refused:
                        self.on_refused(path, 413)
                    # FastAPI re-raises an HTTPException from reading the body; the connection closes
                    # so the rest of the body is never read
                    raise HTTPException(413, self.too_large(f"more than {self.max_bytes} bytes"),
                                        headers={"Connection": "close"})
            return message

        await self.app(scope, limited_receive, send)

    def too_large(self, size: str) -> str:
        return (f"request body is {size}; at most {self.max_bytes} bytes are accepted "
                "(python -m services.inference --max-body-bytes, WATTSERVE_MAX_BODY_BYTES)")

    async def refuse(self, send, path: str, status: int, detail: str) -> None:
        if self.on_refused:
            self.on_refused(path, status)
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})  # the unread body is never read: close
        await send({"type": "http.response.body", "body": body})


def error_responses(*statuses: int) -> dict:
    what = {400: "the model's tokenizer has no chat template: use /v1/completions",
            404: "the request names a model this service does not serve",
            413: "the request body is larger than --max-body-bytes",
            415: "the request body is not JSON",
            500: "the engine failed while generating",
            503: "the model is not loaded yet (or failed to load): see /ready"}
    return {s: {"model": ErrorResponse, "description": what[s]} for s in statuses}


def create_app(service: InferenceService, on_load_failure: Callable[[], None] | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    metrics = ServiceMetrics()
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

    def refused(endpoint: str, status: int) -> None:
        if endpoint in GENERATION_ENDPOINTS:
            metrics.requests.labels(endpoint, str(status)).inc()
            metrics.errors.labels(endpoint, "invalid").inc()

    app.add_middleware(RequestGuard, max_bytes=max_body_bytes, on_refused=refused)

    def invalid(request: Request, errors: list[dict]) -> JSONResponse:
        refused(request.url.path, 422)
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

    def run(endpoint: str, prompt: str, rename: dict[str, str] | None = None, **limits):
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
            msg, field = str(exc), exc.field
            for ours, theirs in (rename or {}).items():  # the endpoint's own field names
                msg, field = msg.replace(ours, theirs), theirs if field == ours else field
            # the shape of every other 422 (a list of errors), as the OpenAPI schema says
            raise HTTPException(422, [{"loc": ["body", field] if field else ["body"], "msg": msg,
                                       "type": "value_error"}]) from None
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

    def check_model(endpoint: str, model: str | None) -> None:
        if model not in (None, service.model.name, service.model.source):
            metrics.requests.labels(endpoint, "404").inc()
            raise HTTPException(404, f"model {model!r} is not served here; this service serves "
                                     f"{service.model.name!r}")

    @app.post("/v1/generate", response_model=GenerateResponse, responses=error_responses(413, 415, 500, 503))
    def generate(req: GenerateRequest) -> GenerateResponse:
        gen = run("/v1/generate", req.prompt, max_new_tokens=req.max_new_tokens,
                  max_length=req.max_length, ignore_eos=req.ignore_eos, stop=stop_list(req.stop))
        return GenerateResponse(
            text=gen.text, token_ids=gen.token_ids, prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens, started_at=gen.started_at,
            finished_at=gen.finished_at, latency_s=gen.latency_s, first_token_at=gen.first_token_at,
            finish_reason=gen.finish_reason,
            config=service.config.name,
            model=service.model.name,
        )

    @app.post("/v1/completions", response_model=CompletionResponse,
              responses=error_responses(404, 413, 415, 500, 503))
    def completions(req: CompletionRequest) -> CompletionResponse:
        check_model("/v1/completions", req.model)
        if req.seed is not None:
            log.info("/v1/completions seed=%d (greedy decoding: the seed changes nothing)", req.seed)
        gen = run("/v1/completions", req.prompt, rename={"max_new_tokens": "max_tokens"},
                  max_new_tokens=req.max_tokens, stop=stop_list(req.stop), ignore_eos=req.ignore_eos)
        return CompletionResponse(
            id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=service.model.name,
            choices=[CompletionChoice(text=gen.text, finish_reason=gen.openai_finish_reason)],
            usage=CompletionUsage(prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                                  total_tokens=gen.prompt_tokens + gen.completion_tokens),
        )

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse,
              responses=error_responses(400, 404, 413, 415, 500, 503))
    def chat_completions(req: ChatCompletionRequest) -> ChatCompletionResponse:
        check_model("/v1/chat/completions", req.model)
        if not service.ready:
            run("/v1/chat/completions", "")  # the 503, counted
        template = getattr(service.tokenizer, "chat_template", None)
        if not template:
            metrics.requests.labels("/v1/chat/completions", "400").inc()
            raise HTTPException(400, f"{service.model.name}'s tokenizer has no chat template, so chat messages "
                                     "cannot be turned into a prompt; use /v1/completions with a prompt")
        prompt = service.tokenizer.apply_chat_template([m.model_dump() for m in req.messages], tokenize=False,
                                                       add_generation_prompt=True)
        gen = run("/v1/chat/completions", prompt, rename={"max_new_tokens": "max_tokens", "prompt": "messages"},
                  max_new_tokens=req.max_tokens, stop=stop_list(req.stop), ignore_eos=req.ignore_eos)
        return ChatCompletionResponse(
            id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=service.model.name,
            choices=[ChatChoice(message=ChatReply(content=gen.text), finish_reason=gen.openai_finish_reason)],
            usage=CompletionUsage(prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                                  total_tokens=gen.prompt_tokens + gen.completion_tokens),
        )

    @app.get("/v1/models", response_model=ModelList)
    def models() -> ModelList:
        """The one model this service serves, as OpenAI's model list (``client.models.list()``)."""
        return ModelList(data=[ModelCard(id=service.model.name, created=int(started), owned_by="wattserve")])

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
