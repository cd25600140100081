"""The generations an engine derived from the eager torch model must reproduce exactly, token for token.

An engine that turns the torch model into something else (jit's traced graphs, torch.compile's
graphs) can silently bake in a shape or a branch that held only for the inputs it saw; it is checked
against eager ``generate`` on these cases: a one-token prompt, a short and a long one, each run normally
and ignoring EOS.
"""

from __future__ import annotations

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
