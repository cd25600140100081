"""One row of the roofline benchmark (benchmarks/roofline.py): one configuration at one precision, in a
process of its own, so that no engine's memory, thread pools or compiled graphs are left for the next.

    python benchmarks/roofline_row.py CONFIG PRECISION MODEL THREADS TOKENS WARMUP PROMPTS_JSONL

It prepares (cached, untimed) and loads the model through the service (InferenceService: the same
tokenizer, warm-up and generation path as a served request; warm-up over the workload's prompt
lengths, as the service warms up for its workload), decodes one untimed prompt, then every
prompt with ``ignore_eos`` (equal work), and prints one JSON line (after MARK): the per-request token counts and
decode times, the token ids, and the weight bytes the engine streams per token. An engine that refuses
(EngineError, PrecisionError, ConfigError) answers ``status: refused`` with its reason.

Weight bytes: the loaded model where the engine holds a torch module (torch, compile: ``model_obj``;
jit: its decode graph): the weights one token reads (``streamed_bytes``: a tied embedding / LM head
once, dynamic int8 Linear layers' packed int8 weights, no buffers, no embedding table that is only
looked up); otherwise the weight files of the engine's artifact on disk (ONNX, OpenVINO IR,
CTranslate2, …), an upper bound (its embedding tables included). The answer names which.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: files that hold an artifact's weights (ONNX and its external data, OpenVINO IR .bin, CTranslate2
#: model.bin, safetensors, GGUF); configs, vocabularies and graphs' XML are not streamed per token
WEIGHT_SUFFIXES = (".onnx", ".onnx_data", ".data", ".bin", ".safetensors", ".gguf")
#: the prefix of the answer line on stdout (libraries may print there too)
MARK = "roofline-row: "


def _is_embedding(module) -> bool:
    """An embedding table (eager, or a TorchScript module made from one): read one row per token."""
    import torch

    return isinstance(module, torch.nn.Embedding) or getattr(module, "original_name", None) == "Embedding"


def _own_weights(module):
    """A module's own weights: its parameters, and a dynamic int8 Linear's packed int8 weight and bias
    (held outside its parameters)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    yield from module.parameters(recurse=False)
    if isinstance(module, DynamicInt8Linear):
        yield module.weight()
        if module.bias() is not None:
            yield module.bias()


def streamed_bytes(module) -> tuple[int, int]:
    """(bytes of the weights one decoded token reads, bytes of the embedding tables left out).

    Every weight once (a tied embedding / LM head is one tensor), buffers (a causal-mask table, int8
    scales) left out; an embedding table counts only where a non-embedding layer also reads it whole
    (a tied LM head): looked up alone it gives one row per token."""
    seen: set[int] = set()
    whole: set[int] = set()
    lookup: dict[int, int] = {}
    sizes: dict[int, int] = {}
    alive = []  # int8 weights are unpacked into new tensors: held, so that no address is reused meanwhile
    for m in module.modules():
        for t in _own_weights(m):
            alive.append(t)
            ptr = t.data_ptr()
            sizes[ptr] = t.numel() * t.element_size()
            if _is_embedding(m):
                lookup[ptr] = sizes[ptr]
            else:
                whole.add(ptr)
            seen.add(ptr)
    left_out = sum(size for ptr, size in lookup.items() if ptr not in whole)
    return sum(sizes[ptr] for ptr in seen) - left_out, left_out


def weight_bytes(engine) -> tuple[int | None, str]:
    """(weight bytes streamed per token, where that figure comes from) for a loaded engine."""
    import torch

    for attr in ("model_obj", "decode"):
        module = getattr(engine, attr, None)
        if isinstance(module, torch.nn.Module):  # TorchScript modules are; ORT's and OpenVINO's wrappers are not
            nbytes, left_out = streamed_bytes(module)
            return nbytes, (f"loaded model ({type(engine).__name__}.{attr}: its weights, less "
                            f"{left_out / 1e6:.1f} MB of embedding tables only looked up)")
    folder = getattr(engine, "artifact_dir", None)
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES) if folder else []
    if not files:
        return None, f"unknown: no torch module and no weight file in the artifact ({folder})"
    return sum(p.stat().st_size for p in files), ("artifact on disk (" + ", ".join(p.name for p in files)
                                                  + "; embedding tables included: an upper bound)")


def run_row(config: str, precision: str, model: str, threads: int, tokens: int, warmup: int,
            prompts_file: Path) -> dict:
    from services.inference.configs import ConfigError, ServingConfig
    from services.inference.engines import EngineError, EngineSettings
    from services.inference.engines.precision import PrecisionError
    from services.inference.service import InferenceService, workload_texts
    from services.models.cache import cache_root
    from services.models.resolve import resolve

    def say(msg: str) -> None:
        print(f"    {config} {precision}: {msg}", file=sys.stderr, flush=True)

    prompts = workload_texts(prompts_file)
    if not prompts:
        raise SystemExit(f"no prompts in {prompts_file}")
    t0 = time.perf_counter()
    try:
        say("preparing (cached), loading, warming up")
        service = InferenceService(ServingConfig.parse(config), resolve(model),
                                   EngineSettings(threads=threads, precision=precision, cache_dir=cache_root()),
                                   warmup=warmup, warmup_prompts=prompts_file)
        service.load()
    except (EngineError, PrecisionError, ConfigError) as exc:
        return {"status": "refused", "reason": f"{type(exc).__name__}: {exc}"}
    ready_s = time.perf_counter() - t0
    nbytes, source = weight_bytes(service.engine)
    say(f"ready in {ready_s:.1f} s; decoding {len(prompts)} prompts x {tokens} tokens")
    service.generate(prompts[0], max_new_tokens=tokens, ignore_eos=True)  # untimed: the longest shapes once
    requests = []
    for prompt in prompts:
        g = service.generate(prompt, max_new_tokens=tokens, ignore_eos=True)
        requests.append({"prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                         "decode_s": g.decode_s, "latency_s": g.latency_s, "token_ids": g.token_ids})
    service.executor.shutdown(wait=True)
    info = service.info()
    return {"status": "ok", "ready_s": ready_s, "load_s": service.load_seconds,
            "warmup_s": (service.warmup_record or {}).get("seconds"),
            "weight_bytes": nbytes, "weight_bytes_source": source, "requests": requests,
            "precision_settings": info.get("precision_settings"), "engine_details": info.get("engine_details"),
            "versions": info.get("versions")}


def main(argv: list[str]) -> int:
    config, precision, model, threads, tokens, warmup, prompts_file = argv
    sys.path.insert(0, str(ROOT))
    result = run_row(config, precision, model, int(threads), int(tokens), int(warmup), Path(prompts_file))
    print(MARK + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
