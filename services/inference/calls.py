"""One generation call from an endpoint, counted once: not ready is 503, a refused request 422 (in the
shape of every other 422), an engine failure 500, a served one 200 with its latency and tokens. Shared by
the native routes (app.py) and the OpenAI-compatible ones (openai_routes.py)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future

from fastapi import HTTPException, Response
from pydantic import BaseModel

from services.inference.generation import Generation, GenerationJob, InvalidRequest
from services.inference.metrics import ServiceMetrics
from services.inference.schemas import ErrorResponse
from services.inference.service import InferenceService
from services.inference.streaming import TokenStream

GENERATION_ENDPOINTS = ("/v1/generate", "/v1/completions", "/v1/chat/completions")


def error_responses(*statuses: int) -> dict:
    """The OpenAPI ``responses`` of an operation: each status it can answer besides 200 and 422."""
    what = {400: "the model's tokenizer has no chat template: use /v1/completions",
            404: "the request names a model this service does not serve",
            413: "the request body is larger than --max-body-bytes",
            415: "the request body is not JSON",
            500: "the engine failed while generating",
            503: "the model is not loaded yet (or failed to load): see /ready"}
    return {s: {"model": ErrorResponse, "description": what[s]} for s in statuses}


class GenerationCalls:
    """The service and its metrics as the endpoints use them."""

    def __init__(self, service: InferenceService, metrics: ServiceMetrics):
        self.service, self.metrics = service, metrics

    def refused(self, endpoint: str, status: int) -> None:
        """A request refused before it reached an endpoint (413, 415, 422 from validation)."""
        if endpoint in GENERATION_ENDPOINTS:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.errors.labels(endpoint, "invalid").inc()

    def require_ready(self, endpoint: str) -> None:
        if not self.service.ready:
            self.metrics.requests.labels(endpoint, "503").inc()
            self.metrics.errors.labels(endpoint, "not_ready").inc()
            raise HTTPException(503, f"model not ready ({self.service.state})")

    def check_model(self, endpoint: str, model: str | None) -> None:
        service = self.service
        if model not in (None, service.model.name, service.model.source):
            self.metrics.requests.labels(endpoint, "404").inc()
            raise HTTPException(404, f"model {model!r} is not served here; this service serves "
                                     f"{service.model.name!r}")

    def invalid(self, endpoint: str, exc: InvalidRequest, rename: dict[str, str] | None = None) -> HTTPException:
        """The 422 for a request the service refused, with the endpoint's own field names."""
        self.metrics.requests.labels(endpoint, "422").inc()
        self.metrics.errors.labels(endpoint, "invalid").inc()
        msg, field = str(exc), exc.field
        for ours, theirs in (rename or {}).items():
            msg, field = msg.replace(ours, theirs), theirs if field == ours else field
        # the shape of every other 422 (a list of errors), as the OpenAPI schema says
        return HTTPException(422, [{"loc": ["body", field] if field else ["body"], "msg": msg,
                                    "type": "value_error"}])

    def failed(self, endpoint: str, exc: Exception) -> HTTPException:
        self.metrics.requests.labels(endpoint, "500").inc()
        self.metrics.errors.labels(endpoint, "engine").inc()
        return HTTPException(500, f"generation failed: {type(exc).__name__}: {exc}")

    def served(self, endpoint: str, gen: Generation) -> None:
        self.metrics.requests.labels(endpoint, "200").inc()
        self.metrics.latency.labels(endpoint).observe(gen.latency_s)
        self.metrics.prompt_tokens.inc(gen.prompt_tokens)
        self.metrics.generated_tokens.inc(gen.completion_tokens)

    def stream(self, endpoint: str, prompt: str, rename: dict[str, str] | None = None, **limits) -> TokenStream:
        """A validated job whose text streams (refusals raised here, before any byte is sent); counted
        when it ends: served, failed, or cancelled (status 499, a client that closed the stream)."""
        self.require_ready(endpoint)
        stream = TokenStream(on_start=self.metrics.in_flight.inc,
                             on_end=lambda future, job: self._stream_ended(endpoint, future, job))
        try:
            stream.job = self.service.prepare(prompt, on_text=stream.on_text, **limits)
        except InvalidRequest as exc:
            raise self.invalid(endpoint, exc, rename) from None
        return stream

    def _stream_ended(self, endpoint: str, future: Future, job: GenerationJob) -> None:
        self.metrics.in_flight.dec()
        if future.exception() is not None:
            self.failed(endpoint, future.exception())
            return
        gen = future.result()
        if job.cancelled:
            self.metrics.requests.labels(endpoint, "499").inc()
            self.metrics.errors.labels(endpoint, "cancelled").inc()
            self.metrics.prompt_tokens.inc(gen.prompt_tokens)
            self.metrics.generated_tokens.inc(gen.completion_tokens)  # spent, even if nobody read them
        else:
            self.served(endpoint, gen)

    async def answer(self, endpoint: str, prompt: str, render: Callable[[Generation], BaseModel],
                     rename: dict[str, str] | None = None, **limits) -> Response:
        """Generate to the end and answer with ``render(generation)`` as JSON. Validation and tokenization
        run here, on the event loop (well under a millisecond; a refusal never reaches the serving thread).
        The job, then the answer's JSON and its count, run on the serving thread, handed over with one hop
        there and one back (services/inference/serving_thread.py); the event loop is woken as the last token
        is heard, so while its thread wakes up the serving thread writes the answer, and the loop only sends
        it (docs/latency.md: on a small VM each wake-up and each cold piece of Python is a tenth of a ms).
        The answer is serialized once, by pydantic: returning a Response skips FastAPI's second validation of
        the route's response model and its jsonable_encoder walk; the OpenAPI schema still comes from the
        route's ``response_model``."""
        self.require_ready(endpoint)
        self.metrics.in_flight.inc()
        try:
            job = self.service.prepare(prompt, **limits)

            def render_and_count(gen: Generation) -> bytes:
                body = render(gen).model_dump_json().encode()
                self.served(endpoint, gen)
                return body

            body = await job.run_on_loop(render_and_count)
        except InvalidRequest as exc:
            raise self.invalid(endpoint, exc, rename) from None
        except Exception as exc:
            raise self.failed(endpoint, exc) from None
        finally:
            self.metrics.in_flight.dec()
        return Response(body, media_type="application/json")
