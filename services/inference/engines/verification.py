"""The generations an engine derived from the eager torch model must reproduce exactly, token for token.

An engine that turns the torch model into something else (jit's traced graphs, torch.compile's
graphs) can silently bake in a shape or a branch that held only for the inputs it saw; it is checked
against eager ``generate`` on these cases: a one-token prompt, a short and a long one, each run normally
and ignoring EOS.
"""

from __future__ import annotations

import json
from pathlib import Path

#: verification: a one-token prompt, a short and a long one; each run normally and ignoring EOS
VERIFY_PROMPTS = (
    "def",
    "def fibonacci(n):\n",
    'from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n'
    '    """ Check if in given list of numbers, are any two numbers closer to each other than\n'
    '    given threshold.\n    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)\n    False\n    """\n    for',
)
VERIFY_NEW_TOKENS = 48  # normal runs: stop at EOS or here
VERIFY_IGNORE_EOS_TOKENS = 64  # min_new_tokens = max_new_tokens


def verification_cases(model, context: int) -> list[dict]:
    """The generations an engine must reproduce exactly (``model``: a ModelSpec): VERIFY_PROMPTS (the
    first cut to one token), each run normally and ignoring EOS, within the ``context`` length."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model.load_source, trust_remote_code=model.trust_remote_code)
    cases = []
    for i, prompt in enumerate(VERIFY_PROMPTS):
        ids = tok(prompt)["input_ids"]
        ids = ids[:1] if i == 0 else ids
        for new, ignore_eos in ((VERIFY_NEW_TOKENS, False), (VERIFY_IGNORE_EOS_TOKENS, True)):
            new = min(new, context - len(ids))
            cases.append({"input_ids": ids, "max_new_tokens": new, "min_new_tokens": new if ignore_eos else 0})
    return cases


def first_difference(a: list[int], b: list[int]) -> int:
    """The index of the first id where ``a`` and ``b`` differ (the shorter length if one is a prefix)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def torch_reference(model, provider: str, threads: int) -> tuple[list[dict], list[list[int]]]:
    """The verification cases and the fp32 torch engine's greedy ids for them on ``provider``: what an
    engine that runs another runtime's generation loop must reproduce. The torch model is freed after."""
    from services.inference.configs import ServingConfig
    from services.inference.engines.base import EngineSettings
    from services.inference.engines.torch_engine import TorchEngine
    from services.models.resolve import context_length

    reference = TorchEngine(model, ServingConfig("torch", provider), EngineSettings(threads=threads))
    reference.load()
    cases = verification_cases(model, context_length(reference.model_obj.config))
    expected = [reference.generate(c["input_ids"], c["max_new_tokens"], c["min_new_tokens"]) for c in cases]
    return cases, expected


def compare_cases(cases: list[dict], expected: list[list[int]], got: list[list[int]], what: str) -> dict:
    """A verdict on ``got`` against ``expected``: verified, cases, exact, the mismatches (where each
    first differs) and, when any differs, a one-sentence ``reason`` that starts with ``what``."""
    mismatches = [
        {"prompt_tokens": len(c["input_ids"]), "min_new_tokens": c["min_new_tokens"],
         "first_difference_at": first_difference(g, w), "expected": w, "got": g}
        for c, w, g in zip(cases, expected, got) if g != w
    ]
    verdict = {"verified": not mismatches, "cases": len(cases), "exact": len(cases) - len(mismatches),
               "mismatches": mismatches}
    if mismatches:
        m = mismatches[0]
        verdict["reason"] = (f"{what} differ from torch's in {len(mismatches)}/{len(cases)} cases (first: "
                             f"{m['prompt_tokens']}-token prompt, at new token {m['first_difference_at']})")
    return verdict


def read_verdict(path: Path, what: str, identity: str, format_version: int, again: str) -> dict:
    """A prepared artifact's verification record, checked to be this model's and this format's. An
    unreadable or foreign one is an EngineError that says which folder to delete to ``again``."""
    from services.inference.engines.base import EngineError

    try:
        verdict = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise EngineError(f"{what} {path} is unreadable ({exc}); delete {Path(path).parent} to {again}") from exc
    if verdict.get("model") != identity or verdict.get("format") != format_version:
        raise EngineError(f"{what} {path} is for another model or format; delete {Path(path).parent} to {again}")
    return verdict
