"""Request and response bodies of the inference service (the contract tests pin)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, StringConstraints,
                      ValidationInfo, field_validator, model_validator)

from services.inference.watcher import MAX_STOP_CHARS, MAX_STOP_SEQUENCES

DEFAULT_MAX_LENGTH = 128  # the study's max_length, counting the prompt
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB request bodies at most: far above what any model's context takes


StopString = Annotated[StrictStr, StringConstraints(min_length=1, max_length=MAX_STOP_CHARS)]
STOP_FIELD = Field(
    default=None,
    description=f"a string, or up to {MAX_STOP_SEQUENCES} strings: generation ends at the first of them and "
                "the text is cut before it (finish_reason \"stop\")",
)
Stop = StopString | Annotated[list[StopString], Field(max_length=MAX_STOP_SEQUENCES)] | None


def stop_list(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


class GenerateRequest(BaseModel):
    """Greedy generation. Give ``max_new_tokens`` or ``max_length`` (prompt included), not both."""

    model_config = ConfigDict(extra="forbid")

    prompt: StrictStr = Field(min_length=1, description="text to continue; must not be empty")
    max_new_tokens: StrictInt | None = Field(default=None, ge=1, description="new tokens at most")
    max_length: StrictInt | None = Field(
        default=None, ge=1, description=f"prompt + new tokens at most (default {DEFAULT_MAX_LENGTH})"
    )
    ignore_eos: StrictBool = Field(default=False, description="keep generating past end-of-sequence")
    stop: Stop = STOP_FIELD


class GenerateResponse(BaseModel):
    text: str
    token_ids: list[int]
    prompt_tokens: int
    completion_tokens: int
    started_at: float = Field(description="epoch seconds, UTC")
    finished_at: float = Field(description="epoch seconds, UTC")
    latency_s: float
    finish_reason: Literal["stop", "eos", "length"] = Field(
        description="stop: a stop string ended it (cut from the text); eos: the model's end of sequence; "
                    "length: the token limit")
    first_token_at: float | None = Field(None, description="epoch seconds, UTC: the first new token existed "
                                         "(time to first token = first_token_at - started_at)")
    decode_s: float | None = Field(None, description="seconds from the first new token to the last (0 for one "
                                   "token; inter-token latency = decode_s / (completion_tokens - 1))")
    config: str
    model: str


UNSUPPORTED = {  # OpenAI fields this service refuses unless they ask for the default: never silently ignored
    "echo": (False, "the completion never repeats the prompt"),
    "logprobs": (None, "log-probabilities are not returned"),
    "best_of": (1, "one greedy completion is generated"),
    "suffix": (None, "insertion (a suffix after the completion) is not served"),
}


class StreamOptions(BaseModel):
    """OpenAI's ``stream_options`` (only with ``stream: true``)."""

    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool = Field(default=False, description="a last chunk with empty choices and the usage")
    continuous_usage_stats: StrictBool = Field(default=False, description="vLLM's: every chunk carries the usage "
                                               "so far (completion_tokens: the tokens made when it was sent)")


STREAM_FIELD = Field(default=False, description="true: Server-Sent Events (text/event-stream), one chunk per "
                                                "piece of text as it is generated, then data: [DONE]")


class CompletionRequest(BaseModel):
    """The OpenAI ``/v1/completions`` subset this service honours: greedy, one prompt, streamed or not.

    The OpenAI fields it cannot honour (``echo``, ``logprobs``, ``best_of`` > 1, ``suffix``, ``n`` > 1,
    a temperature above 0) are refused by name; other unknown fields are ignored so standard clients work.
    """

    model_config = ConfigDict(extra="ignore")

    prompt: StrictStr = Field(min_length=1)
    model: StrictStr | None = None
    max_tokens: StrictInt = Field(default=16, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1, description="OpenAI's newer name for "
                                                    "max_tokens (AIPerf sends it): the same limit")
    temperature: StrictFloat = Field(default=0.0, ge=0.0, le=0.0, description="only 0 (greedy) is served")
    n: Literal[1] = Field(default=1, description="one completion per request")
    stream: StrictBool = STREAM_FIELD
    stream_options: StreamOptions | None = None
    stop: Stop = STOP_FIELD
    ignore_eos: StrictBool = Field(default=False, description="keep generating past end-of-sequence (vLLM's field)")
    seed: StrictInt | None = Field(default=None, description="accepted and logged; decoding is greedy, so every "
                                   "seed gives the same text")
    echo: Literal[False] = Field(default=False, description="not supported: only false")
    logprobs: None = Field(default=None, description="not supported: only null")
    best_of: Literal[1] | None = Field(default=None, description="not supported: only 1 or null")
    suffix: None = Field(default=None, description="not supported: only null")

    @field_validator("n", mode="before")
    @classmethod
    def exact_type(cls, value, info: ValidationInfo):
        """Literal[1] alone takes true and 1.0 (Python equality): not what the schema says."""
        if type(value) is not int:
            raise ValueError(f"n must be the integer 1, got {value!r}; this service generates one completion "
                             "per request")
        return value

    @model_validator(mode="after")
    def options_need_a_stream(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    @model_validator(mode="after")
    def one_token_limit(self):
        """max_completion_tokens is max_tokens under its newer name; two different limits are refused."""
        if self.max_completion_tokens is not None:
            if "max_tokens" in self.model_fields_set and self.max_tokens != self.max_completion_tokens:
                raise ValueError(f"max_tokens={self.max_tokens} and max_completion_tokens="
                                 f"{self.max_completion_tokens} disagree; give one of them")
            self.max_tokens = self.max_completion_tokens
        return self

    @field_validator(*UNSUPPORTED, mode="before")
    @classmethod
    def refuse_unsupported(cls, value, info: ValidationInfo):
        default, why = UNSUPPORTED[info.field_name]
        allowed = (default, None) if info.field_name == "best_of" else (default,)
        if not any(value is a or (type(value) is type(a) and value == a) for a in allowed):
            raise ValueError(f"{info.field_name}={value!r} is not supported by this service ({why}); "
                             f"leave it out or send {default!r}")
        return value


class CompletionChoice(BaseModel):
    text: str
    index: int = 0
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage


class CompletionChunkChoice(BaseModel):
    text: str
    index: int = 0
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = Field(description="null until the last token's chunk")


class CompletionChunk(BaseModel):
    """One ``data:`` event of a streamed completion (as OpenAI's: the same object as the whole response,
    each choice holding the new piece of text)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChunkChoice] = Field(description="one choice; empty in the usage chunk")
    usage: CompletionUsage | None = Field(default=None, description="only in the last chunk, with "
                                          "stream_options.include_usage (null before it)")


class StreamErrorDetail(BaseModel):
    message: str
    type: str
    code: int


class StreamError(BaseModel):
    """The event that ends a stream whose engine failed after the first byte (OpenAI's error shape)."""

    error: StreamErrorDetail


def event_stream(chunk: type[BaseModel]) -> dict:
    """The ``text/event-stream`` content of an operation's 200: each event's ``data`` is a chunk, the error
    event, or ``[DONE]`` (OpenAPI 3.1: ``schema`` describes one event, as schemathesis reads it). The chunk
    models are added to the components by ``stream_components``."""
    payload = {"anyOf": [{"$ref": f"#/components/schemas/{chunk.__name__}"},
                         {"$ref": "#/components/schemas/StreamError"}]}
    return {"text/event-stream": {"schema": {
        "type": "object", "required": ["data"],
        "description": f"Server-Sent Events: data: {{{chunk.__name__}}} per piece of text, data: [DONE] at the end",
        "properties": {"data": {"anyOf": [{"const": "[DONE]"},
                                          {"type": "string", "contentMediaType": "application/json",
                                           "contentSchema": payload}]}}}}}


def stream_components() -> dict:
    """JSON schemas of the streamed events' models, for the OpenAPI components (no route returns them as
    JSON, so FastAPI would leave them out)."""
    from pydantic.json_schema import models_json_schema

    models = [(m, "serialization") for m in (CompletionChunk, ChatCompletionChunk, StreamError)]
    _, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
    return defs["$defs"]


class ErrorResponse(BaseModel):
    """A refusal or failure other than invalid input (those are 422 with a list of errors)."""

    detail: str = Field(description="what is wrong and, where it helps, what to do")


class ReadyResponse(BaseModel):
    ready: bool
    state: Literal["starting", "loading", "ready", "failed"]
    error: str | None = Field(description="why loading failed, when it did")


class HealthResponse(BaseModel):
    status: Literal["alive"]
    state: Literal["starting", "loading", "ready", "failed"]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: StrictStr


class ChatCompletionRequest(BaseModel):
    """OpenAI ``/v1/chat/completions``, served only where the model's tokenizer has a chat template; the
    same greedy subset as ``/v1/completions`` (unknown fields ignored, unsupported ones refused there)."""

    model_config = ConfigDict(extra="ignore")

    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    model: StrictStr | None = None
    max_tokens: StrictInt = Field(default=16, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1, description="OpenAI's newer name for "
                                                    "max_tokens (AIPerf sends it): the same limit")
    temperature: StrictFloat = Field(default=0.0, ge=0.0, le=0.0, description="only 0 (greedy) is served")
    n: Literal[1] = Field(default=1, description="one completion per request")
    stream: StrictBool = STREAM_FIELD
    stream_options: StreamOptions | None = None
    stop: Stop = STOP_FIELD
    ignore_eos: StrictBool = False
    seed: StrictInt | None = None
    logprobs: Literal[False] | None = Field(default=None, description="not supported: only false or null")

    exact_type = field_validator("n", mode="before")(CompletionRequest.exact_type.__func__)
    options_need_a_stream = model_validator(mode="after")(CompletionRequest.options_need_a_stream)
    one_token_limit = model_validator(mode="after")(CompletionRequest.one_token_limit)


class ChatReply(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatReply
    finish_reason: Literal["stop", "length"]


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = Field(default=None, description="in the first chunk only")
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = Field(description="null until the last token's chunk")


class ChatCompletionChunk(BaseModel):
    """One ``data:`` event of a streamed chat completion (OpenAI's ``chat.completion.chunk``)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice] = Field(description="one choice; empty in the usage chunk")
    usage: CompletionUsage | None = Field(default=None, description="only in the last chunk, with "
                                          "stream_options.include_usage (null before it)")
