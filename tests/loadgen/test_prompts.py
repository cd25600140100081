"""Prompt sets: the paper set is exactly the study's file, and anything else is refused."""

from __future__ import annotations

import json
import shutil

import pytest

from loadgen import prompts as P
from loadgen.prompts import PAPER_SHA256, PromptError, load_prompts


def test_paper_set_is_the_studys_164_prompts_in_order():
    ps = load_prompts("paper")
    assert (ps.name, ps.sha256, ps.count) == ("paper", PAPER_SHA256, 164)
    assert [p.task_id for p in ps.items] == [f"RandomTokens/{i}" for i in range(164)]
    assert [p.index for p in ps.items] == list(range(164))
    assert ps.describe() == {"name": "paper", "path": str(ps.path), "sha256": PAPER_SHA256, "count": 164}
    assert ps.sha256 == P.sha256_file(ps.path)


def tampered_copy(tmp_path):
    lines = P.PROMPT_SETS["paper"][0].read_text().splitlines(keepends=True)
    row = json.loads(lines[7])
    row["new_prompt"] += " "  # one space: a different set
    lines[7] = json.dumps(row) + "\n"
    copy = tmp_path / "paper-prompts.jsonl"
    copy.write_text("".join(lines))
    return copy


def test_a_tampered_paper_set_is_refused(tmp_path, monkeypatch):
    copy = tampered_copy(tmp_path)
    with pytest.raises(PromptError, match=f"expected {PAPER_SHA256}"):
        load_prompts(copy, expected_sha256=PAPER_SHA256)
    monkeypatch.setitem(P.PROMPT_SETS, "paper", (copy, PAPER_SHA256))  # as if the shipped file were edited
    with pytest.raises(PromptError, match="was modified"):
        load_prompts("paper")


def test_an_untampered_copy_loads_under_its_own_name(tmp_path):
    copy = tmp_path / "mine-prompts.jsonl"
    shutil.copy(P.PROMPT_SETS["paper"][0], copy)
    ps = load_prompts(str(copy), expected_sha256=PAPER_SHA256)
    assert (ps.name, ps.count, ps.sha256) == ("mine", 164, PAPER_SHA256)


def test_a_generated_set_is_checked_against_its_sidecar(tmp_path):
    f = tmp_path / "g.jsonl"
    f.write_text('{"task_id": "a", "new_prompt": "def f(x):"}\n')
    P.sidecar_path(f).write_text(json.dumps({"sha256": P.sha256_file(f)}))
    assert load_prompts(str(f)).count == 1
    f.write_text('{"task_id": "a", "new_prompt": "def g(x):"}\n')
    with pytest.raises(PromptError, match="sha256"):
        load_prompts(str(f))


@pytest.mark.parametrize("content, message", [
    ("", "no prompts"),
    ('{"task_id": "a", "new_prompt": "x"}\nnot json\n', ":2: not JSON"),
    ('{"task_id": "a"}\n', "'new_prompt' must be a non-empty string"),
    ('{"task_id": "a", "new_prompt": "x"}\n{"task_id": "a", "new_prompt": "y"}\n', "duplicate task_id"),
    ('["a", "b"]\n', "expected a JSON object"),
])
def test_malformed_sets_say_where(tmp_path, content, message):
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    with pytest.raises(PromptError, match=message):
        load_prompts(str(f))


def test_unknown_name_or_missing_file(tmp_path):
    with pytest.raises(PromptError, match="neither a named set"):
        load_prompts(str(tmp_path / "nope.jsonl"))
