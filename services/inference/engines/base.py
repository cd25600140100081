"""The one interface every runtime engine implements: prepare, load, generate, describe.

Tokenization lives outside the engines (one tokenizer, the same ids for everyone), so an engine
only maps prompt token ids to greedily generated token ids. Same work everywhere: greedy, batch 1,
the attention mask passed, KV cache on wherever the engine supports it.
"""

from __future__ import annotations

import abc
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.inference.configs import ServingConfig
from services.inference.engines import precision as precisions
from services.models.resolve import ModelSpec

PRECISIONS = precisions.SUPPORTED


class EngineError(RuntimeError):
    """An engine cannot prepare or load a model (the message says why and what to do)."""


@dataclass(frozen=True)
class EngineSettings:
    """Settings applied identically to every engine, and recorded with every run."""

    threads: int
    precision: str = "fp32"
    cache_dir: Path = field(default_factory=lambda: Path(".cache"))

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        precisions.check(self.precision)  # a PrecisionError (ValueError) names the supported ones


class Engine(abc.ABC):
    """A model loaded by one runtime engine on one execution provider."""

    #: registry name, the ``<engine>`` part of a configuration
    name: str = ""
    #: whether this engine keeps a KV cache between decoding steps
    kv_cache: bool = True
    #: the precisions this engine serves (engines/precision.py SUPPORTED); others are refused
    precisions: tuple[str, ...] = ("fp32",)
    #: {(provider, precision): reason} for a declared precision one provider cannot serve
    provider_refusals: dict[tuple[str, str], str] = {}

    def __init__(self, model: ModelSpec, config: ServingConfig, settings: EngineSettings):
        precisions.check_serving(type(self), config.provider, settings.precision)
        problem = self.missing()
        if problem:
            raise EngineError(problem)
        self.model = model
        self.config = config
        self.settings = settings
        self.artifact_dir: Path | None = None
        #: what the libraries report about numeric precision after load (engines/precision.py)
        self.precision_settings: dict[str, Any] = {}

    @classmethod
    def missing(cls) -> str | None:
        """Why this engine cannot run on this machine at all (an opt-in library not installed), in one
        sentence that says how to get it; None: it can. Asked before anything loads."""
        return None

    # -- preparation (export), cached; never timed as inference ---------------------------------
    def artifact_key(self) -> str:
        """A key that changes whenever the artifact would: model, engine, precision, versions."""
        parts = {
            "model": self.model.identity,
            "engine": self.name,
            "precision": self.settings.precision,
            "device": self.config.device,
            "versions": self.library_versions(),
        }
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
        return f"{self.name}-{self.settings.precision}-{digest}"

    def artifact_path(self) -> Path:
        return self.settings.cache_dir / "artifacts" / self.model.slug / self.artifact_key()

    def prepare(self, progress=print) -> Path | None:
        """Build the engine's artifact into the cache if missing; return its folder (or None)."""
        return None

    # -- serving ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def load(self) -> None:
        """Load the (prepared) model onto the configuration's device."""

    @abc.abstractmethod
    def generate(self, input_ids: list[int], max_new_tokens: int, min_new_tokens: int = 0,
                 streamer=None, should_stop: Callable[[], bool] | None = None) -> list[int]:
        """Greedy-decode up to ``max_new_tokens`` new ids; EOS is blocked before ``min_new_tokens``.
        ``streamer`` (transformers' streamer protocol: ``put`` the prompt, then each new token;
        ``end``) is told as tokens are produced; ``should_stop`` is asked after each token has been
        put, and True ends the generation there (a stop string, a client gone)."""

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "provider": self.config.provider,
            "device": self.config.device,
            "precision": self.settings.precision,
            "precision_settings": self.precision_settings,
            "kv_cache": self.kv_cache,
            "threads": self.settings.threads,
            "artifact": str(self.artifact_dir) if self.artifact_dir else None,
            "versions": self.library_versions(),
        }

    def library_versions(self) -> dict[str, str]:
        import torch
        import transformers

        return {"torch": torch.__version__, "transformers": transformers.__version__}


def greedy_generation_config(model, max_new_tokens: int, min_new_tokens: int):
    """A clean greedy GenerationConfig: the same for every HF-backed engine.

    A model's shipped generation config (temperature, repetition penalty, …) is not inherited,
    so engines cannot differ by what their wrappers copy from it.
    """
    from transformers import GenerationConfig

    eos = model.config.eos_token_id
    pad = getattr(model.config, "pad_token_id", None)
    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        eos_token_id=eos,
        bos_token_id=getattr(model.config, "bos_token_id", None),
        pad_token_id=pad if pad is not None else (eos[0] if isinstance(eos, list) else eos),
        use_cache=True,
    )


def eos_ids(model) -> list[int]:
    """The model's end-of-sequence ids, as the service and the torch engine read them (its config)."""
    from transformers import AutoConfig

    eos = AutoConfig.from_pretrained(model.load_source, trust_remote_code=model.trust_remote_code).eos_token_id
    if eos is None:
        return []
    return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def stopping_criteria(should_stop: Callable[[], bool] | None):
    """``should_stop`` as a transformers StoppingCriteriaList for ``generate`` (None: none). transformers
    asks it right after the streamer has heard the new token, so the watcher's answer is current."""
    if should_stop is None:
        return None
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class AskWatcher(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), should_stop(), dtype=torch.bool, device=input_ids.device)

        def __deepcopy__(self, memo):  # generate may copy its criteria; the copy must ask the same watcher
            return self

    return StoppingCriteriaList([AskWatcher()])
