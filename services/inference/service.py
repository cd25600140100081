"""The inference service without HTTP: one configuration, one model, one tokenizer, one serving thread.

Tokenization is shared by every engine (the same ids for everyone); the engine only maps prompt
ids to greedily generated ids. Requests are serialized on the one serving thread: batch 1, as the
study served, and no engine's state can mix two requests' outputs.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from services.inference.configs import ServingConfig
from services.inference.engines import Engine, EngineSettings, engine_class
from services.inference.generation import Generation, GenerationJob, InvalidRequest
from services.inference.schemas import DEFAULT_MAX_LENGTH
from services.inference.serving_thread import ServingThread
from services.inference.tokens import prompt_encoder, text_decoder
from services.inference.watcher import GenerationWatcher, TextListener
from services.models.resolve import ModelSpec, context_length, materialize

log = logging.getLogger("wattserve.inference")

WARMUP_PROMPT = "def add(a, b):\n    return"
#: the workload whose prompt lengths warm-up covers unless told otherwise (the study's prompts)
PAPER_PROMPTS = Path(__file__).resolve().parents[2] / "loadgen" / "prompts" / "paper-prompts.jsonl"
WARMUP_NEW_TOKENS = 8   # short generations: prefill of each length plus a few decode steps
WARMUP_MAX_PASSES = 8   # at most this many passes over every shape
WARMUP_SETTLED = 0.9    # a pass whose time is above 90 % of the previous one's shows no more compilation,
WARMUP_NOISE_S = 0.005  # and so does one less than 5 ms faster (timer and scheduling noise, not a compile)


def workload_texts(prompts_file: Path | None) -> list[str]:
    """The prompts of a JSONL workload (``new_prompt`` or ``prompt``); [] where it is unreadable."""
    try:
        lines = prompts_file.read_text(encoding="utf-8").splitlines() if prompts_file else []
    except OSError as exc:
        log.warning("warm-up prompts %s unreadable (%s); warming one prompt length only", prompts_file, exc)
        return []
    records = (json.loads(line) for line in lines if line.strip())
    return [text for r in records if (text := r.get("new_prompt") or r.get("prompt") or "")]


def warmup_shapes(tokenize, prompts_file: Path | None) -> list[list[int]]:
    """One prompt (token ids) per distinct prompt length of the workload, shortest first. TorchScript's
    profiling executor specializes per input shape, ORT and cuBLAS pick kernels per shape: every length
    the workload sends is run before /ready, so none compiles inside the measured window. Without a
    readable prompt file: the single built-in warm-up prompt."""
    by_length: dict[int, list[int]] = {}
    for text in workload_texts(prompts_file):
        ids = tokenize(text)
        if ids:
            by_length.setdefault(len(ids), ids)
    if not by_length:
        ids = tokenize(WARMUP_PROMPT)
        by_length[len(ids)] = ids
    return [by_length[n] for n in sorted(by_length)]


def cuda_device_uuids() -> list[str]:
    """NVML-style UUIDs (``GPU-…``, as nvidia-smi, NVML and dcgm-exporter name the board) of the CUDA device
    this process serves on: torch's current device, which is also the one ONNX Runtime's CUDA provider
    uses (device_id 0 of the visible devices). Through the CUDA runtime, so CUDA_VISIBLE_DEVICES and
    CUDA_DEVICE_ORDER are already applied; [] where no CUDA device is usable. Only called for a -cuda
    configuration (a CPU run never touches CUDA)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        uuid = str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
    except Exception as exc:  # no driver, a broken CUDA: the run records no UUID (the analysis then keeps none)
        log.warning("could not read the CUDA device's UUID: %s: %s", type(exc).__name__, exc)
        return []
    return [uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"]


class InferenceService:
    def __init__(self, config: ServingConfig, model: ModelSpec, settings: EngineSettings, warmup: int = 3,
                 warmup_prompts: Path | None = PAPER_PROMPTS):
        self.config = config
        self.model = model
        self.settings = settings
        self.warmup = warmup
        self.warmup_prompts = warmup_prompts
        self.warmup_record: dict | None = None
        # every generation — warm-up and requests — runs on this one thread: per-thread state (cuBLAS
        # handles, ORT's per-thread contexts, TorchScript's profiled graphs) is made once, before /ready
        self.executor = ServingThread("wattserve-generate")
        self.state = "starting"  # starting → loading → ready | failed
        self.error: str | None = None
        self.load_seconds: float | None = None
        self.engine: Engine | None = None
        self._gpu_uuids: list[str] | None = None
        self.http_server: dict | None = None  # what serves it over HTTP (set by __main__; None in-process)
        # prompt -> token ids and generated ids -> text; load() swaps in the cheapest calls equal to these
        # (services/inference/tokens.py)
        self.encode = lambda text: self.tokenizer(text)["input_ids"]
        self.decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)

    # -- start-up ---------------------------------------------------------------------------------
    def load(self) -> None:
        """Fetch/build, prepare and load the model, then warm it up. Blocking; sets ``state``."""
        from transformers import AutoConfig, AutoTokenizer

        self.state = "loading"
        t0 = time.time()
        try:
            self.model = materialize(self.model, progress=log.info)
            self.tokenizer = AutoTokenizer.from_pretrained(
                self.model.load_source, trust_remote_code=self.model.trust_remote_code
            )
            hf_config = AutoConfig.from_pretrained(
                self.model.load_source, trust_remote_code=self.model.trust_remote_code
            )
            self.context = context_length(hf_config)
            eos = hf_config.eos_token_id
            self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
            self.engine = engine_class(self.config.engine)(self.model, self.config, self.settings)
            self.engine.prepare(progress=log.info)
            t_load = time.time()
            self.engine.load()
            self.load_seconds = time.time() - t_load
            # the workload's prompts, as every request's, through the cheapest encoder equal to __call__; the
            # generated text through the cheapest decoder equal to decode
            texts = [WARMUP_PROMPT, *workload_texts(self.warmup_prompts)]
            self.encode = prompt_encoder(self.tokenizer, texts)
            self.decode = text_decoder(self.tokenizer, texts)
            self.warm_up(warmup_shapes(self.encode, self.warmup_prompts))
        except Exception as exc:
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            if "trust_remote_code" in str(exc) and not self.model.trust_remote_code:
                self.error += (" [wattserve runs no model code unless asked: --trust-remote-code or "
                               "WATTSERVE_TRUST_REMOTE_CODE=1, only for a model you trust]")
            log.error("loading %s with %s failed: %s", self.model.name, self.config.name, self.error)
            raise
        self.state = "ready"
        log.info("%s ready with %s in %.1fs (engine load %.1fs)", self.model.name, self.config.name,
                 time.time() - t0, self.load_seconds)

    def warm_up(self, shapes: list[list[int]]) -> dict:
        """Run every shape on the serving thread, pass after pass, until a pass is no faster than
        WARMUP_SETTLED of the one before (no more compilation), at least ``warmup`` passes and at most
        WARMUP_MAX_PASSES. Recorded in /info (run.json ``service.warmup``); it ends before /ready, so
        outside every measured window."""
        t0 = time.time()
        passes: list[float] = []
        while self.warmup > 0 and len(passes) < max(WARMUP_MAX_PASSES, self.warmup):
            start = time.perf_counter()
            for ids in shapes:
                self.executor.submit(self.engine.generate, ids, WARMUP_NEW_TOKENS, WARMUP_NEW_TOKENS).result()
            passes.append(time.perf_counter() - start)
            settled = self._settled(passes)
            if len(passes) >= self.warmup and settled:
                break
        self.warmup_record = {
            "seconds": time.time() - t0, "passes": len(passes), "pass_seconds": passes,
            "settled": self._settled(passes),
            "prompt_lengths": [len(ids) for ids in shapes], "new_tokens": WARMUP_NEW_TOKENS,
            "min_passes": self.warmup, "prompts": str(self.warmup_prompts) if self.warmup_prompts else None,
        }
        log.info("warm-up: %d pass(es) over %d prompt lengths in %.1fs (%s)", len(passes), len(shapes),
                 self.warmup_record["seconds"], ", ".join(f"{p:.2f}s" for p in passes))
        return self.warmup_record

    @staticmethod
    def _settled(passes: list[float]) -> bool:
        return len(passes) >= 2 and (passes[-1] > WARMUP_SETTLED * passes[-2]
                                     or passes[-2] - passes[-1] < WARMUP_NOISE_S)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    # -- requests ---------------------------------------------------------------------------------
    def limits(self, prompt_tokens: int, max_new_tokens: int | None, max_length: int | None) -> int:
        """Resolve the generation limit to a number of new tokens, refusing what cannot be served."""
        if prompt_tokens >= self.context:
            raise InvalidRequest(
                f"prompt is {prompt_tokens} tokens; the model's context is {self.context} tokens", "prompt"
            )
        room = self.context - prompt_tokens
        if max_new_tokens is not None and max_length is not None:
            raise InvalidRequest("give max_new_tokens or max_length, not both")
        if max_new_tokens is not None:
            if max_new_tokens > room:
                raise InvalidRequest(
                    f"max_new_tokens={max_new_tokens} does not fit: prompt {prompt_tokens} tokens + "
                    f"{max_new_tokens} > context {self.context}; at most {room}", "max_new_tokens"
                )
            return max_new_tokens
        max_length = DEFAULT_MAX_LENGTH if max_length is None else max_length
        if max_length > self.context:
            raise InvalidRequest(f"max_length={max_length} exceeds the model's context ({self.context})",
                                 "max_length")
        if max_length <= prompt_tokens:
            raise InvalidRequest(
                f"max_length={max_length} counts the prompt, which is already {prompt_tokens} tokens; "
                "raise max_length or use max_new_tokens", "max_length"
            )
        return max_length - prompt_tokens

    def prepare(self, prompt: str, max_new_tokens: int | None = None, max_length: int | None = None,
                ignore_eos: bool = False, stop: list[str] | None = None,
                on_text: TextListener | None = None) -> GenerationJob:
        """Validate and tokenize a request (InvalidRequest: refused, nothing run). ``on_text`` hears the
        text as it is produced (a stream), on the serving thread."""
        if not self.ready or self.engine is None:
            raise RuntimeError(f"service not ready ({self.state})")
        if not prompt.strip():
            raise InvalidRequest("prompt is empty or only whitespace", "prompt")
        if len(prompt) > self.context * 64:  # no tokenizer yields < 1 token per 64 chars: too long
            raise InvalidRequest(f"prompt is {len(prompt)} characters, far longer than the model's context",
                                 "prompt")
        ids = self.encode(prompt)
        if not ids:
            raise InvalidRequest("prompt tokenizes to no tokens", "prompt")
        new = self.limits(len(ids), max_new_tokens, max_length)
        watcher = GenerationWatcher(self.decode, stop, on_text=on_text, limit=new, eos_ids=self.eos_ids,
                                    ignore_eos=ignore_eos)
        return GenerationJob(self, ids, new, ignore_eos, watcher)

    def generate(self, prompt: str, max_new_tokens: int | None = None, max_length: int | None = None,
                 ignore_eos: bool = False, stop: list[str] | None = None) -> Generation:
        """Greedy generation; the text ends before the first of the ``stop`` strings (the token count
        still counts every token generated, the one that completed the stop string included)."""
        return self.prepare(prompt, max_new_tokens, max_length, ignore_eos, stop).submit().result()

    def gpu_uuids(self) -> list[str]:
        """The serving GPU(s), once the model is loaded on them ([] for a CPU configuration)."""
        if self.config.provider != "cuda":
            return []
        if self._gpu_uuids is None and self.ready:
            self._gpu_uuids = cuda_device_uuids()
        return self._gpu_uuids or []

    def info(self) -> dict:
        import platform

        engine = self.engine.describe() if self.engine else {}
        return {
            "config": self.config.name,
            "engine": self.config.engine,
            "provider": self.config.provider,
            "device": self.config.device,
            "gpu_uuids": self.gpu_uuids(),
            "state": self.state,
            "error": self.error,
            "model": self.model.describe(),
            "dtype": self.settings.precision,
            "precision": self.settings.precision,
            # what the libraries report after load (TF32 off for fp32; engines/precision.py)
            "precision_settings": engine.get("precision_settings"),
            # an ORT session's real providers and their options (None for engines without providers)
            "execution_providers": engine.get("providers"),
            "provider_options": engine.get("provider_options"),
            "kv_cache": engine.get("kv_cache"),
            "threads": self.settings.threads,
            "context_length": getattr(self, "context", None),
            "load_seconds": self.load_seconds,
            "warmup": self.warmup_record,
            "engine_details": engine,
            "versions": {"python": platform.python_version(), **engine.get("versions", {})},
            "http_server": self.http_server,
        }
