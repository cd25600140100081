"""The ``humaneval`` workload: the 164 whole HumanEval prompts, greedy, scored for correctness.

- **Generation limit** — ``max_new_tokens`` (default 192), and a prompt is replayed only when prompt
  tokens + that limit fit the model's context; the others are skipped *before* the run and counted in
  run.json (``workload.skipped``), never truncated. A skipped problem counts as not solved.
- **Stop sequences** — the usual HumanEval five. The service takes at most four per request
  (services/inference/watcher.py ``MAX_STOP_SEQUENCES``, as OpenAI's API), so four are *sent*
  (``SENT_STOPS``: generation ends at the token that completes one of them, no token or joule is spent
  past it) and the fifth, ``\nclass``, is cut *post hoc*: a completion that reaches it goes on to the
  next sent stop or the limit, and is cut there before scoring. ``\nclass`` is the one left out because
  it is the rarest to end a HumanEval completion (a function body is followed by another ``def``, a
  ``# comment``, an ``if __name__`` or a ``print`` far more often than by a class). The post-hoc cut over
  all five stays as a safety net: the scored text is the same as if all five had been sent, and
  run.json ``scoring.stop`` counts the completions each kind of cut applied to (a *sent* stop still in a
  completion means the service missed it, and is flagged).
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
SENT_STOPS = ("\ndef", "\nif", "\nprint", "\n#")  # the service's limit is 4 a request; see the docstring
POST_HOC_STOPS = tuple(s for s in STOP_SEQUENCES if s not in SENT_STOPS)
DEFAULT_MAX_NEW_TOKENS = 192
STOP_APPLIED = ("sent: generation stops at the token completing one of stop_sent (the service's limit is 4 "
                "a request); post hoc: each completion is also cut at the first of stop_sequences before "
                "scoring (stop_post_hoc, and a safety net for the sent ones; scoring.stop counts each cut)")


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
             "stop_sequences": list(STOP_SEQUENCES), "stop_sent": list(SENT_STOPS),
             "stop_post_hoc": list(POST_HOC_STOPS), "stop_applied": STOP_APPLIED}
    return fitted, entry


def first_stop(text: str, stops: Sequence[str] = STOP_SEQUENCES) -> str | None:
    """The stop sequence that occurs first in ``text`` (None: none does)."""
    found = [(i, s) for s in stops if (i := text.find(s)) >= 0]
    return min(found)[1] if found else None


def stop_cuts(outputs: Sequence[str], sent: Sequence[str] = SENT_STOPS) -> dict:
    """Which cut each completion needed before scoring: ``post_hoc`` (it reached a stop that was not
    sent, by design), ``safety_net`` (a *sent* stop is still in the text: the service did not stop at
    it, a bug), ``none`` (the service's text was already whole: stopped at a sent stop, EOS or the
    limit). With nothing sent (runs before the service had ``stop``) every cut is post hoc."""
    counts = {"post_hoc": 0, "safety_net": 0, "none": 0}
    for text in outputs:
        stop = first_stop(text)
        counts["none" if stop is None else "safety_net" if stop in sent else "post_hoc"] += 1
    return {"sent": list(sent), "post_hoc_stops": [s for s in STOP_SEQUENCES if s not in sent],
            "completions": counts}


def score_rows(rows: Sequence[Mapping], problems: Sequence[str], isolation: str, run_dir: Path,
               sent: Sequence[str] = SENT_STOPS) -> dict:
    """Score a run's answered rows (cut at the stop sequences) over every problem of the workload;
    writes ``scoring.jsonl`` (each problem's outcome) and returns run.json's ``scoring`` entry, with
    ``stop``: the cuts that applied (:func:`stop_cuts`)."""
    from scoring.sandbox import choose
    from scoring.score import score

    outputs = {r["task_id"]: r.get("output") or "" for r in rows
               if r.get("status") == "ok" and r.get("output") is not None}
    completions = {t: cut_at_stop(o) for t, o in outputs.items()}
    scores = score(completions, choose(isolation), task_ids=list(problems))
    scores.write_jsonl(run_dir / "scoring.jsonl")
    return {**scores.summary(), "stop": stop_cuts(list(outputs.values()), sent),
            "when": "after the run: sensors stopped, outside every measured window"}
