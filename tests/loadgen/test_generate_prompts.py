"""The seeded generator: deterministic, 164 prompts of 10-15 tokens, provenance recorded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loadgen.generate_prompts import count, generate, load_tokenizer
from loadgen.prompts import load_prompts, sidecar_path
from tests.conftest import ROOT
from tests.loadgen.conftest import bench_env


@pytest.fixture(scope="module")
def tok(tiny):
    return load_tokenizer("tiny")[0]


def test_cli_writes_a_set_that_loads_and_matches_an_in_process_run(tmp_path, tok):
    out = tmp_path / "s7.jsonl"
    r = subprocess.run([sys.executable, "-m", "loadgen.generate_prompts", "--seed", "7", "--out", str(out)],
                       cwd=ROOT, env=bench_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == generate(7, tok)  # same seed, another process: the same set
    assert len(rows) == 164 and len({r["source_task_id"] for r in rows}) == 164
    assert all(10 <= count(tok, r["new_prompt"]) <= 15 for r in rows)
    assert all(r["new_prompt"].strip() for r in rows)
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["seed"] == 7 and meta["tokenizer"]["name"] == "tiny" and meta["count"] == 164
    ps = load_prompts(str(out))  # checked against the sidecar's hash
    assert ps.sha256 == meta["sha256"] and ps.count == 164
    again = subprocess.run([sys.executable, "-m", "loadgen.generate_prompts", "--seed", "7", "--out", str(out)],
                           cwd=ROOT, env=bench_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--force" in again.stderr  # never silently replaced


def test_the_seed_matters(tok):
    a, b = generate(1, tok), generate(2, tok)
    assert a == generate(1, tok)
    assert sum(x["new_prompt"] != y["new_prompt"] for x, y in zip(a, b)) > 100
