"""The ``humaneval`` workload: the 164 whole HumanEval prompts, greedy, scored for correctness.

- **Generation limit** — ``max_new_tokens`` (default 192), and a prompt is replayed only when prompt
  tokens + that limit fit the model's context; the others are skipped *before* the run and counted in
  run.json (``workload.skipped``), never truncated. A skipped problem counts as not solved.
- **Stop sequences** — the usual HumanEval ones. The service has no stop support yet, so they are
  applied *post hoc*: the model generates up to the limit (its energy includes those tokens) and each
  completion is cut at the first stop sequence before scoring. run.json says so.
- **Scoring** — after the run (sensors stopped, idle-after over): outside every measured window, its CPU
  charged to nothing. Each completion runs in a sandbox (scoring/), never in this process.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping, Sequence

from loadgen.prompts import PromptSet

NAME = "humaneval"
STOP_SEQUENCES = ("\ndef", "\nclass", "\nif", "\nprint", "\n#")
DEFAULT_MAX_NEW_TOKENS = 192
STOP_APPLIED = ("post hoc: the service has no stop sequences yet; it generated to the limit (the energy "
                "includes those tokens) and each completion was cut at the first stop sequence before scoring")


def cut_at_stop(text: str, stops: Sequence[str] = STOP_SEQUENCES) -> str:
    """The completion up to (not including) its first stop sequence."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def model_context(model_dir: Path) -> int:
    """The model's context in tokens (its config's position limit)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(model_dir))
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        if getattr(cfg, key, None):
            return int(getattr(cfg, key))
    raise ValueError(f"{model_dir}: the model config names no context length")


def fit_prompts(prompts: PromptSet, model_dir: Path, max_new_tokens: int) -> tuple[PromptSet, dict]:
    """(the prompts that fit the context with ``max_new_tokens`` to spare, the workload entry)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    context = model_context(model_dir)
    kept, skipped = [], []
    for p in prompts.items:
        n = len(tok(p.text)["input_ids"])
        if n + max_new_tokens <= context:
            kept.append(dataclasses.replace(p, index=len(kept)))
        else:
            skipped.append({"task_id": p.task_id, "prompt_tokens": n})
    fitted = dataclasses.replace(prompts, items=tuple(kept))
    entry = {"name": NAME, "problems": prompts.count, "replayed": len(kept), "skipped_count": len(skipped),
             "skipped": skipped, "context_tokens": context, "max_new_tokens": max_new_tokens,
             "skip_rule": "prompt tokens + max_new_tokens > context: skipped before the run, counted "
                          "as not solved, never truncated",
             "stop_sequences": list(STOP_SEQUENCES), "stop_applied": STOP_APPLIED}
    return fitted, entry


def score_rows(rows: Sequence[Mapping], problems: Sequence[str], isolation: str, run_dir: Path) -> dict:
    """Score a run's answered rows (cut at the stop sequences) over every problem of the workload;
    writes ``scoring.jsonl`` (each problem's outcome) and returns run.json's ``scoring`` entry."""
    from scoring.sandbox import choose
    from scoring.score import score

    completions = {r["task_id"]: cut_at_stop(r.get("output") or "") for r in rows
                   if r.get("status") == "ok" and r.get("output") is not None}
    scores = score(completions, choose(isolation), task_ids=list(problems))
    scores.write_jsonl(run_dir / "scoring.jsonl")
    return {**scores.summary(), "when": "after the run: sensors stopped, outside every measured window"}
