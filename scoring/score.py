"""Score completions: each one in its own sandbox, a few at a time, and the tally by outcome.

The outcome of every problem that was asked for is one of passed / assertion / timeout /
syntax_error / crash, or ``missing`` when no completion was given for it (a request that failed or a
prompt that was skipped): missing counts as not solved, never as left out of pass@1's denominator.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from analysis.quantities import pass_at_1
from scoring.problems import ProblemError, check_program, data_sha256, problems
from scoring.sandbox import OUTCOMES, Sandbox

FAILURE_KINDS = ("assertion", "timeout", "syntax_error", "crash", "missing")


@dataclass
class TaskResult:
    task_id: str
    outcome: str          # OUTCOMES or "missing"
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Scores:
    """Every problem's outcome and how the scoring was done."""
    results: list[TaskResult]
    isolation: dict
    seconds: float
    data_sha256: str = ""
    counts: dict = field(init=False)

    def __post_init__(self):
        self.counts = {k: 0 for k in ("passed", *FAILURE_KINDS)}
        for r in self.results:
            self.counts[r.outcome] += 1

    @property
    def problems(self) -> int:
        return len(self.results)

    @property
    def solved(self) -> int:
        return self.counts["passed"]

    @property
    def pass_at_1(self) -> float | None:
        return pass_at_1(self.solved, self.problems)

    def summary(self) -> dict:
        """What run.json's ``scoring`` entry and the CLI's --json print."""
        return {"problems": self.problems, "solved": self.solved, "pass_at_1": self.pass_at_1,
                "failures": {k: self.counts[k] for k in FAILURE_KINDS}, "isolation": self.isolation,
                "unsafe": self.isolation.get("isolation") == "unsafe-local",
                "scoring_s": round(self.seconds, 3), "data_sha256": self.data_sha256}

    def text(self) -> str:
        p = self.pass_at_1
        lines = [f"pass@1 {'undefined (no problems)' if p is None else f'{p:.4f}'}: "
                 f"{self.solved}/{self.problems} solved; isolation {self.isolation.get('isolation')}; "
                 f"{self.seconds:.1f} s"]
        if self.isolation.get("isolation") == "unsafe-local":
            lines.append("WARNING: UNSAFE-LOCAL — completions ran WITHOUT a sandbox (--unsafe-local-exec)")
        lines.append("failures: " + ", ".join(f"{k} {self.counts[k]}" for k in FAILURE_KINDS))
        return "\n".join(lines)

    def write_jsonl(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as fh:
            for r in self.results:
                fh.write(json.dumps(asdict(r)) + "\n")
        tmp.replace(path)


def score(completions: Mapping[str, str | None], sandbox: Sandbox, *, task_ids: Iterable[str] | None = None,
          workers: int = 2) -> Scores:
    """Score ``completions`` (task_id -> completion text, None = no completion) over ``task_ids``
    (default: the completions' own task ids, in HumanEval order)."""
    known = problems()
    wanted = list(task_ids) if task_ids is not None else [t for t in known if t in completions]
    unknown = [t for t in [*wanted, *completions] if t not in known]
    if unknown:
        raise ProblemError(f"{len(unknown)} task id(s) are not HumanEval problems, e.g. {unknown[0]!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    t0 = time.monotonic()

    def one(task_id: str) -> TaskResult:
        completion = completions.get(task_id)
        if completion is None:
            return TaskResult(task_id, "missing", "no completion")
        ex = sandbox.run(check_program(task_id, completion))
        assert ex.outcome in OUTCOMES
        return TaskResult(task_id, ex.outcome, ex.detail, round(ex.seconds, 3))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, wanted))
    return Scores(results, sandbox.describe(), time.monotonic() - t0, data_sha256())


def read_completions(path: Path) -> dict[str, str]:
    """A JSONL of ``{task_id, completion}``; a malformed line or a repeated task id is an error naming
    the line."""
    out: dict[str, str] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProblemError(f"cannot read {path}: {exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ProblemError(f"{path}:{n}: not JSON ({exc})") from None
        if not isinstance(row, dict) or not isinstance(row.get("task_id"), str) \
                or not isinstance(row.get("completion"), str):
            raise ProblemError(f"{path}:{n}: want an object with string task_id and completion")
        if row["task_id"] in out:
            raise ProblemError(f"{path}:{n}: {row['task_id']} appears twice (pass@1 scores one "
                               "greedy completion per problem)")
        out[row["task_id"]] = row["completion"]
    if not out:
        raise ProblemError(f"{path}: no completions")
    return out
