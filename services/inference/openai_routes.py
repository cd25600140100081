"""The OpenAI-compatible routes (/v1/completions, /v1/chat/completions, /v1/models): the subset this
service honours, so the OpenAI SDK, guidellm, AIPerf and ``vllm bench serve`` can talk to it unchanged.
``stream: true`` answers Server-Sent Events in OpenAI's format (streaming.py carries the pieces)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from fastapi import APIRouter, FastAPI, HTTPException
from pydantic import BaseModel

from services.inference.calls import GenerationCalls, error_responses
from services.inference.generation import Generation
from services.inference.schemas import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatReply,
    CompletionChoice,
    CompletionChunk,
    CompletionChunkChoice,
    CompletionRequest,
    CompletionResponse,
    CompletionUsage,
    ModelCard,
    ModelList,
    StreamOptions,
    event_stream,
    stop_list,
)
from services.inference.streaming import DONE_EVENT, EventStreamResponse, TokenStream, sse

log = logging.getLogger("wattserve.inference")


def usage(gen: Generation) -> CompletionUsage:
    return CompletionUsage(prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                           total_tokens=gen.prompt_tokens + gen.completion_tokens)


def include_usage(options: StreamOptions | None) -> bool:
    return bool(options and options.include_usage)


def running_usage(options: StreamOptions | None) -> bool:
    """continuous_usage_stats (vLLM's, guidellm asks for it): usage in every chunk; the last usage chunk
    still needs include_usage."""
    return bool(options and options.continuous_usage_stats)


def openai_reason(finish: str | None) -> str | None:
    """The watcher's stop|eos|length as OpenAI's: "stop" for a stop string and end-of-sequence alike."""
    return None if finish is None else "length" if finish == "length" else "stop"


async def sse_events(stream: TokenStream, chunk: Callable[[str, str | None], BaseModel],
                     usage_chunk: Callable[[CompletionUsage], BaseModel] | None,
                     first: BaseModel | None = None, running_usage: bool = False) -> AsyncIterator[bytes]:
    """The events of one stream: ``first`` (if any), a chunk per piece of text (the last token's with the
    finish reason; with ``running_usage`` each carries the usage so far, vLLM's continuous_usage_stats), the
    usage chunk (if asked for), ``[DONE]``. An engine failure after the first byte can no longer be a 500:
    it is an ``error`` event (OpenAI's shape, which the SDK raises), and no ``[DONE]``, so no client takes
    the stream for complete."""
    exclude = None if (usage_chunk or running_usage) else {"usage"}
    prompt_tokens = len(stream.job.ids)
    if first is not None:
        yield sse(first.model_dump(exclude=exclude))
    try:
        async with aclosing(stream.pieces()) as pieces:
            async for piece, finish, tokens in pieces:
                event = chunk(piece, openai_reason(finish))
                if running_usage:
                    event.usage = CompletionUsage(prompt_tokens=prompt_tokens, completion_tokens=tokens,
                                                  total_tokens=prompt_tokens + tokens)
                yield sse(event.model_dump(exclude=exclude))
    except Exception as exc:  # the engine's own exception, already counted as a 500 by calls
        yield sse({"error": {"message": f"generation failed: {type(exc).__name__}: {exc}", "type": "server_error",
                             "code": 500}})
        return
    if usage_chunk is not None:
        yield sse(usage_chunk(usage(stream.generation)).model_dump())
    yield DONE_EVENT


def completion_events(stream: TokenStream, head: dict, options: StreamOptions | None) -> AsyncIterator[bytes]:
    return sse_events(
        stream, lambda text, finish: CompletionChunk(**head, choices=[
            CompletionChunkChoice(text=text, finish_reason=finish)]),
        (lambda u: CompletionChunk(**head, choices=[], usage=u)) if include_usage(options) else None,
        running_usage=running_usage(options))


def chat_events(stream: TokenStream, head: dict, options: StreamOptions | None) -> AsyncIterator[bytes]:
    """OpenAI's chat stream: a first chunk with the role, then the content pieces."""
    return sse_events(
        stream, lambda text, finish: ChatCompletionChunk(**head, choices=[
            ChatChunkChoice(delta=ChatDelta(content=text), finish_reason=finish)]),
        (lambda u: ChatCompletionChunk(**head, choices=[], usage=u)) if include_usage(options) else None,
        first=ChatCompletionChunk(**head, choices=[ChatChunkChoice(delta=ChatDelta(role="assistant", content=""),
                                                                   finish_reason=None)]),
        running_usage=running_usage(options))


def add_openai_routes(router: FastAPI | APIRouter, calls: GenerationCalls, started: float) -> None:
    """The routes, added to ``router`` (the app itself: its own routes are what the fast path can call
    directly, where an included router's are FastAPI's internal copies)."""
    service, metrics = calls.service, calls.metrics

    @router.post("/v1/completions", response_model=CompletionResponse,
                 responses={200: {"content": event_stream(CompletionChunk)},
                            **error_responses(404, 413, 415, 500, 503)})
    async def completions(req: CompletionRequest):
        endpoint = "/v1/completions"
        calls.check_model(endpoint, req.model)
        if req.seed is not None:
            log.info("%s seed=%d (greedy decoding: the seed changes nothing)", endpoint, req.seed)
        limits = dict(rename={"max_new_tokens": "max_tokens"}, max_new_tokens=req.max_tokens,
                      stop=stop_list(req.stop), ignore_eos=req.ignore_eos)
        head = dict(id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=service.model.name)
        if req.stream:
            stream = calls.stream(endpoint, req.prompt, **limits)
            return EventStreamResponse(completion_events(stream, head, req.stream_options), stream)
        return await calls.answer(endpoint, req.prompt, lambda gen: CompletionResponse(
            **head, usage=usage(gen),
            choices=[CompletionChoice(text=gen.text, finish_reason=gen.openai_finish_reason)]), **limits)

    @router.post("/v1/chat/completions", response_model=ChatCompletionResponse,
                 responses={200: {"content": event_stream(ChatCompletionChunk)},
                            **error_responses(400, 404, 413, 415, 500, 503)})
    async def chat_completions(req: ChatCompletionRequest):
        endpoint = "/v1/chat/completions"
        calls.check_model(endpoint, req.model)
        calls.require_ready(endpoint)
        template = getattr(service.tokenizer, "chat_template", None)
        if not template:
            metrics.requests.labels(endpoint, "400").inc()
            raise HTTPException(400, f"{service.model.name}'s tokenizer has no chat template, so chat messages "
                                     "cannot be turned into a prompt; use /v1/completions with a prompt")
        prompt = service.tokenizer.apply_chat_template([m.model_dump() for m in req.messages], tokenize=False,
                                                       add_generation_prompt=True)
        limits = dict(rename={"max_new_tokens": "max_tokens", "prompt": "messages"}, max_new_tokens=req.max_tokens,
                      stop=stop_list(req.stop), ignore_eos=req.ignore_eos)
        head = dict(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=service.model.name)
        if req.stream:
            stream = calls.stream(endpoint, prompt, **limits)
            return EventStreamResponse(chat_events(stream, head, req.stream_options), stream)
        return await calls.answer(endpoint, prompt, lambda gen: ChatCompletionResponse(
            **head, usage=usage(gen),
            choices=[ChatChoice(message=ChatReply(content=gen.text), finish_reason=gen.openai_finish_reason)]),
            **limits)

    @router.get("/v1/models", response_model=ModelList)
    def models() -> ModelList:
        """The one model this service serves, as OpenAI's model list (``client.models.list()``)."""
        return ModelList(data=[ModelCard(id=service.model.name, created=int(started), owned_by="wattserve")])
