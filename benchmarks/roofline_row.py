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
jit: its decode graph), as the unique tensor storages of its ``state_dict`` (a tied embedding / LM
head counts once; dynamic int8 Linear layers count their packed int8 weights); otherwise the weight
files of the engine's artifact on disk (ONNX, OpenVINO IR, …). The answer names which.
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


def _tensors(value):
    """The tensors in a state_dict value (dynamic int8 Linear layers keep a (weight, bias) tuple)."""
    import torch

    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)


def tensor_bytes(module) -> int:
    """Bytes of the distinct tensors in ``module.state_dict()`` (shared storage counted once)."""
    seen, total = set(), 0
    for value in module.state_dict().values():
        for t in _tensors(value):
            key = (t.data_ptr(), t.numel(), t.dtype)
            if key not in seen:
                seen.add(key)
                total += t.numel() * t.element_size()
    return total


def weight_bytes(engine) -> tuple[int | None, str]:
    """(weight bytes streamed per token, where that figure comes from) for a loaded engine."""
    import torch

    for attr in ("model_obj", "decode"):
        module = getattr(engine, attr, None)
        if isinstance(module, torch.nn.Module):  # TorchScript modules are; ORT's and OpenVINO's wrappers are not
            return tensor_bytes(module), f"loaded model ({type(engine).__name__}.{attr} state_dict)"
    folder = getattr(engine, "artifact_dir", None)
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES) if folder else []
    if not files:
        return None, f"unknown: no torch module and no weight file in the artifact ({folder})"
    return sum(p.stat().st_size for p in files), "artifact on disk (" + ", ".join(p.name for p in files) + ")"


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
