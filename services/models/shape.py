"""``shape:<hf id>``: random weights with the exact architecture of a registry model.

Built locally from a config kept in this repository (services/models/shapes/), so timings on a
machine without hub access are realistic. The outputs are meaningless: the name says "shape" so
nobody mistakes it for the trained model. The tokenizer is the HumanEval BPE of ``tiny`` (ids it
never produces are still valid model inputs; generated ids beyond it decode to nothing).
"""

from __future__ import annotations

import json
from pathlib import Path

SEED = 4321


def _build(out: Path, config_file: Path, progress) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from services.models.resolve import META_FILE, content_hash, context_length
    from services.models.tiny import humaneval_texts, train_tokenizer

    raw = {k: v for k, v in json.loads(config_file.read_text()).items() if not k.startswith("_")}
    model_type = raw.pop("model_type")
    config = AutoConfig.for_model(model_type, **raw)
    progress(f"  initialising {model_type} with random weights (seed {SEED})")
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    tokenizer = train_tokenizer(humaneval_texts())
    tokenizer.model_max_length = context_length(config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    meta = {"name": f"shape:{config_file.stem.replace('--', '/')}", "seed": SEED, "params": params,
            "random_weights": True, "content_hash": content_hash(out)}
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    progress(f"  {params / 1e6:.0f}M parameters written")


def build_shape(hf_id: str, config_file: Path, models_dir: Path, progress=print) -> Path:
    from services.models.cache import build_once, is_complete

    target = models_dir / f"shape--{hf_id.replace('/', '--')}"
    if not is_complete(target):
        progress(f"building shape stand-in for {hf_id} (random weights) into {target}")
    return build_once(target, lambda tmp: _build(tmp, config_file, progress))
