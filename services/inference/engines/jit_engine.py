"""jit: the model traced into two TorchScript graphs (prefill, decode) and served by our own loop.

Tracing records one path through the Python model code, so a graph can silently bake in a shape or
a branch that only held for the example input. The artifact is therefore verified when it is built:
the saved graphs must generate the same token ids as eager ``model.generate`` on several prompts,
or the engine refuses to load. The KV cache crosses the graph boundary as a flat tuple of tensors
(``k0, v0, k1, v1, …``); the wrappers rebuild the transformers cache object from it inside forward.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import time
import warnings
from pathlib import Path
from typing import Any

from services.inference.engines.base import Engine, EngineError, greedy_generation_config, write_json_atomic
from services.inference.engines.verification import verification_cases
from services.models.cache import build_once

#: bump when the traced graphs or the metadata change meaning: old artifacts are then rebuilt
FORMAT_VERSION = 2
META_FILE = "jit-meta.json"
GRAPHS = {"prefill": "prefill.pt", "decode": "decode.pt"}
#: the example prompt length the graphs are traced with; verification uses other lengths
TRACE_PROMPT_LEN = 6
@contextlib.contextmanager
def _quiet_jit():
    """Silence torch.jit's own deprecation notices and the tracer's warnings, here only.

    Every torch.jit entry point warns in torch 2.13; TracerWarnings flag values the trace fixes as
    constants, which verification checks for real. Nothing is turned into an error.
    """
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def _flatten_cache(cache) -> tuple:
    """A transformers cache (or legacy tuples) as a flat ``(k0, v0, k1, v1, …)`` tuple."""
    cache = getattr(cache, "self_attention_cache", cache)  # EncoderDecoderCache: self-attention only
    if hasattr(cache, "layers"):
        return tuple(t for layer in cache.layers for t in (layer.keys, layer.values))
    return tuple(t for layer in cache for t in layer[:2])


def _cache_kind(cache) -> str:
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    if isinstance(cache, EncoderDecoderCache):
        return "encoder_decoder"
    if isinstance(cache, DynamicCache):
        return "dynamic"
    if isinstance(cache, tuple):
        return "legacy"
    raise EngineError(f"unsupported KV cache type {type(cache).__name__} for TorchScript tracing")


def _build_cache(kind: str, flat: tuple):
    """Rebuild, inside a traced forward, the cache object the model's forward expects.

    Layers are filled in place rather than through ``from_legacy_cache``, which concatenates each
    tensor onto an empty one: a second copy of the whole KV cache on every decoding step.
    """
    from transformers.cache_utils import DynamicCache, DynamicLayer, EncoderDecoderCache

    pairs = tuple(zip(flat[0::2], flat[1::2]))
    if kind == "legacy":
        return pairs
    cache = DynamicCache()
    for keys, values in pairs:
        layer = DynamicLayer()
        layer.lazy_initialization(keys)
        layer.keys, layer.values = keys, values
        cache.layers.append(layer)
    return EncoderDecoderCache(cache, DynamicCache()) if kind == "encoder_decoder" else cache


def _module_base():
    import torch

    class _Step(torch.nn.Module):
        """Shared by both graphs: one model call with an explicit 4D mask and explicit positions.

        The mask is a boolean ``[1, 1, q, kv]`` (True = attend). Passing it 4D makes transformers
        use it as is, so its mask builder (vmap-based, untraceable) never runs. Eager attention adds
        the mask to the scores, so there it becomes the additive float mask transformers would make.
        """

        def __init__(self, model, cache_kind: str, additive_mask: bool):
            super().__init__()
            self.model = model
            self.cache_kind = cache_kind
            self.additive_mask = additive_mask
            params = inspect.signature(model.forward).parameters
            self.pass_cache_position = "cache_position" in params
            self.logits_to_keep = "logits_to_keep" in params  # generate() uses it where it exists

        def step(self, input_ids, mask, position_ids, past):
            if self.additive_mask:
                dtype = self.model.dtype
                mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
                    ~mask, torch.finfo(dtype).min
                )
            kwargs: dict[str, Any] = {}
            if self.pass_cache_position:  # else the model derives it from a shape: a traced constant
                kwargs["cache_position"] = position_ids[0]
            if self.logits_to_keep:
                kwargs["logits_to_keep"] = 1
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=position_ids,
                past_key_values=past,
                use_cache=True,
                return_dict=True,
                **kwargs,
            )
            return out.logits[:, -1, :], _flatten_cache(out.past_key_values)

    class Prefill(_Step):
        def forward(self, input_ids, mask, position_ids):
            return self.step(input_ids, mask, position_ids, None)

    class Decode(_Step):
        def forward(self, input_ids, mask, position_ids, past: tuple):
            return self.step(input_ids, mask, position_ids, _build_cache(self.cache_kind, past))

    return Prefill, Decode


def greedy_loop(prefill, decode, input_ids: list[int], max_new_tokens: int, min_new_tokens: int,
                eos_ids: list[int], device: str, streamer=None, should_stop=None) -> list[int]:
    """Greedy decoding over the two graphs, token for token what HF ``generate`` does.

    EOS is set to -inf while fewer than ``min_new_tokens`` ids exist (HF's MinNewTokensLength
    processor); generation stops after an EOS (which is returned) or ``max_new_tokens`` ids.
    ``streamer`` hears the prompt and then each new token, as transformers' streamers do; then
    ``should_stop()`` is asked, as transformers asks its stopping criteria.
    """
    import torch

    if max_new_tokens <= 0:
        return []
    n = len(input_ids)
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    new: list[int] = []
    if streamer is not None:
        streamer.put(input_ids)
    with torch.inference_mode():
        logits, past = prefill(
            torch.tensor([input_ids], dtype=torch.long, device=device),
            torch.ones(n, n, dtype=torch.bool, device=device).tril()[None, None],
            torch.arange(n, device=device)[None],
        )
        while True:
            if len(new) < min_new_tokens and len(eos_ids):
                logits[:, eos] = float("-inf")
            token = int(logits.argmax(-1))
            new.append(token)
            if streamer is not None:
                streamer.put([token])
            if token in eos_ids or len(new) >= max_new_tokens or (should_stop is not None and should_stop()):
                if streamer is not None:
                    streamer.end()
                return new
            total = n + len(new)
            logits, past = decode(
                torch.tensor([[token]], dtype=torch.long, device=device),
                torch.ones(1, 1, 1, total, dtype=torch.bool, device=device),
                torch.tensor([[total - 1]], dtype=torch.long, device=device),
                past,
            )


def _eos_ids(config) -> list[int]:
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]


class JitEngine(Engine):
    name = "jit"
    #: fp32 only: the graphs are traced and verified against eager fp32; a bf16 trace would need its
    #: own verification against eager bf16, and bf16 has no native kernels on the CPUs here (torch bf16)
    precisions = ("fp32",)
    kv_cache = True  # the decode graph carries the KV cache; load() refuses unverified artifacts

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.meta: dict[str, Any] | None = None

    def artifact_key(self) -> str:
        return f"{super().artifact_key()}-f{FORMAT_VERSION}"

    # -- preparation ------------------------------------------------------------------------------
    def prepare(self, progress=print) -> Path:
        """Trace, save and verify the two graphs into the cache (once)."""
        target = self.artifact_path()
        return build_once(target, lambda tmp: self._build(tmp, progress))

    def _load_eager(self, attn_implementation: str | None):
        """The eager model as the torch engine loads it (``None``: transformers' default attention)."""
        import torch
        from transformers import AutoModelForCausalLM

        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        model = AutoModelForCausalLM.from_pretrained(
            self.model.load_source,
            revision=None if self.model.path else self.model.revision,
            torch_dtype=torch.float32,
            trust_remote_code=self.model.trust_remote_code,
            use_safetensors=None,
            **extra,
        )
        return model.to(self.config.device).eval().requires_grad_(False)

    def _verify_cases(self, context: int) -> list[dict]:
        return verification_cases(self.model, context)

    def _build(self, out: Path, progress) -> None:
        import torch

        from services.models.resolve import context_length

        threads = torch.get_num_threads()
        torch.set_num_threads(self.settings.threads)  # verify with the threads it will serve with
        try:
            progress(f"jit: tracing {self.model.name} for {self.config.device} into {out.parent}")
            reference = self._load_eager(None)  # exactly the torch engine's model: the reference
            config = reference.config
            context = context_length(config)
            eos_ids = _eos_ids(config)
            cases = self._verify_cases(context)
            expected = [self._reference_generate(reference, c) for c in cases]
            default_attn = config._attn_implementation
            meta: dict[str, Any] = {
                "format": FORMAT_VERSION,
                "model": self.model.identity,
                "model_name": self.model.name,
                "device": self.config.device,
                "reference_attn_implementation": default_attn,
                "eos_token_id": eos_ids,
                "pad_token_id": getattr(config, "pad_token_id", None),
                "context_length": context,
                "vocab_size": config.vocab_size,
                "versions": self.library_versions(),
                "graphs": GRAPHS,
                "attempts": [],
                "verified": False,
            }
            # the torch engine's attention first; eager attention if that does not trace correctly
            for attn in dict.fromkeys([default_attn, "eager"]):
                model = reference if attn == default_attn else self._load_eager(attn)
                attempt = self._trace_and_verify(model, attn, out, cases, expected, eos_ids)
                meta["attempts"].append(attempt)
                progress(f"jit: {attn} attention: " + ("verified" if attempt["verified"] else attempt["reason"]))
                if attempt["verified"]:
                    meta.update(verified=True, attn_implementation=attn, **{
                        k: attempt[k] for k in ("cache_kind", "num_kv_tensors", "trace_seconds", "verify_seconds")
                    })
                    break
            else:
                meta["attn_implementation"] = None
                meta["reason"] = "; ".join(f"{a['attn_implementation']}: {a['reason']}" for a in meta["attempts"])
            meta["verification_cases"] = [
                {"prompt_tokens": len(c["input_ids"]), "max_new_tokens": c["max_new_tokens"],
                 "min_new_tokens": c["min_new_tokens"], "expected_tokens": len(e)}
                for c, e in zip(cases, expected)
            ]
            write_json_atomic(out / META_FILE, meta)
        finally:
            torch.set_num_threads(threads)

    def _reference_generate(self, model, case: dict) -> list[int]:
        import torch

        ids = torch.tensor([case["input_ids"]], dtype=torch.long, device=self.config.device)
        cfg = greedy_generation_config(model, case["max_new_tokens"], case["min_new_tokens"])
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=cfg)
        return out[0, ids.shape[1]:].tolist()

    def _trace_and_verify(self, model, attn: str, out: Path, cases, expected, eos_ids) -> dict:
        """Trace both graphs, save them, reload the saved files and check them against ``expected``."""
        import torch

        attempt: dict[str, Any] = {"attn_implementation": attn, "verified": False}
        device = self.config.device
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                one = torch.ones(1, 1, dtype=torch.long, device=device)
                probe = model(input_ids=one, attention_mask=one, use_cache=True)
            cache_kind = _cache_kind(probe.past_key_values)
            prefill_cls, decode_cls = _module_base()
            additive = attn == "eager"
            n = TRACE_PROMPT_LEN
            example = (
                torch.arange(1, n + 1, device=device)[None] % model.config.vocab_size,
                torch.ones(n, n, dtype=torch.bool, device=device).tril()[None, None],
                torch.arange(n, device=device)[None],
            )
            with torch.no_grad(), _quiet_jit():
                prefill = torch.jit.trace(prefill_cls(model, cache_kind, additive), example, check_trace=False)
                _, past = prefill(*example)
                step = (
                    torch.tensor([[1]], device=device),
                    torch.ones(1, 1, 1, n + 1, dtype=torch.bool, device=device),
                    torch.tensor([[n]], device=device),
                    past,
                )
                decode = torch.jit.trace(decode_cls(model, cache_kind, additive), step, check_trace=False)
                for name, graph in (("prefill", prefill), ("decode", decode)):
                    torch.jit.save(graph, str(out / GRAPHS[name]))
        except Exception as exc:  # an architecture the tracer cannot follow: say so, try the next
            attempt["reason"] = f"tracing failed: {type(exc).__name__}: {exc}"[:2000]
            return attempt
        attempt.update(cache_kind=cache_kind, num_kv_tensors=len(past),
                       trace_seconds=round(time.perf_counter() - t0, 3))

        t0 = time.perf_counter()
        try:
            prefill, decode = self._load_graphs(out)  # verify the files that will be served
            mismatches = []
            for case, want in zip(cases, expected):
                got = greedy_loop(prefill, decode, case["input_ids"], case["max_new_tokens"],
                                  case["min_new_tokens"], eos_ids, device)
                if got != want:
                    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                    mismatches.append({
                        "prompt_tokens": len(case["input_ids"]), "min_new_tokens": case["min_new_tokens"],
                        "first_difference_at": first, "expected": want, "traced": got,
                    })
        except Exception as exc:
            attempt["reason"] = f"traced graphs failed to run: {type(exc).__name__}: {exc}"[:2000]
            return attempt
        attempt["verify_seconds"] = round(time.perf_counter() - t0, 3)
        if mismatches:
            m = mismatches[0]
            attempt["mismatches"] = mismatches
            attempt["reason"] = (
                f"traced greedy ids differ from eager generate in {len(mismatches)}/{len(cases)} cases "
                f"(first: {m['prompt_tokens']}-token prompt, at new token {m['first_difference_at']})"
            )
        else:
            attempt["verified"] = True
        return attempt

    def _load_graphs(self, folder: Path):
        import torch

        with _quiet_jit():
            return tuple(
                torch.jit.load(str(folder / GRAPHS[name]), map_location=self.config.device).eval()
                for name in ("prefill", "decode")
            )

    # -- serving ----------------------------------------------------------------------------------
    def load(self) -> None:
        import torch

        from services.inference.engines.precision import apply_torch

        torch.set_num_threads(self.settings.threads)
        self.precision_settings = apply_torch(self.settings.precision)
        folder = self.prepare()
        meta = self._read_meta(folder)
        if not meta.get("verified"):
            raise EngineError(
                f"model {self.model.name} cannot be traced correctly for generation: "
                f"{meta.get('reason', 'the artifact was not verified')} (details in {folder / META_FILE}); "
                "serve it with the torch engine, or delete that folder to trace it again"
            )
        self.prefill, self.decode = self._load_graphs(folder)
        self.meta = meta
        self.eos_ids = [int(e) for e in meta["eos_token_id"]]
        self.context_length = int(meta["context_length"])
        self.artifact_dir = folder

    def _read_meta(self, folder: Path) -> dict:
        path = folder / META_FILE
        try:
            meta = json.loads(path.read_text())
            missing = [k for k in ("model", "verified", "eos_token_id", "context_length") if k not in meta]
            if missing:
                raise ValueError(f"missing keys {missing}")
        except (OSError, ValueError) as exc:
            raise EngineError(f"jit artifact metadata {path} is unreadable ({exc}); delete {folder} to rebuild it") from exc
        if meta["model"] != self.model.identity or meta.get("format") != FORMAT_VERSION:
            raise EngineError(f"jit artifact {folder} was built for another model or format; delete it to rebuild it")
        return meta

    def generate(self, input_ids: list[int], max_new_tokens: int, min_new_tokens: int = 0,
                 streamer=None, should_stop=None) -> list[int]:
        if not input_ids:
            raise ValueError("input_ids is empty")
        if len(input_ids) + max_new_tokens > self.context_length:
            raise EngineError(
                f"{len(input_ids)} prompt + {max_new_tokens} new tokens exceed the model's context "
                f"length {self.context_length}"
            )
        return greedy_loop(self.prefill, self.decode, input_ids, max_new_tokens, min_new_tokens,
                           self.eos_ids, self.config.device, streamer, should_stop)

    def describe(self) -> dict[str, Any]:
        meta = self.meta or {}
        return {
            **super().describe(),
            "verified": bool(meta.get("verified")),
            "attn_implementation": meta.get("attn_implementation"),
            "traced_graphs": sorted(GRAPHS.values()) if meta.get("verified") else [],
        }
