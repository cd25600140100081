"""Sandboxed scoring: canonical solutions pass, empty ones fail, and hostile completions fail their
problem within the time limit while the machine, the results folder and the caller stay untouched.

Both sandboxes are tested where they work here (docker: a Docker engine and wattserve-base:bookworm;
namespace: root + util-linux); one that does not is skipped with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scoring.problems import problems
from scoring.sandbox import (DockerSandbox, Limits, NamespaceSandbox, SandboxUnavailable, UnsafeLocal,
                             choose)
from scoring.score import read_completions, score

ROOT = Path(__file__).resolve().parents[2]
LIMITS = Limits(time_s=3.0)


def _sandbox(kind):
    try:
        return kind.probe(LIMITS)
    except SandboxUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module", params=[DockerSandbox, NamespaceSandbox], ids=["docker", "namespace"])
def box(request):
    return _sandbox(request.param)


def _all(completion_of) -> dict[str, str]:
    return {t: completion_of(p) for t, p in problems().items()}


def test_canonical_solutions_pass_164_of_164_in_the_auto_sandbox():
    try:
        sandbox = choose("auto", LIMITS)
    except SandboxUnavailable as exc:
        pytest.skip(str(exc))
    scores = score(_all(lambda p: p["canonical_solution"]), sandbox, workers=2)
    assert scores.problems == 164
    assert scores.solved == 164, [r for r in scores.results if r.outcome != "passed"][:3]
    assert scores.pass_at_1 == 1.0


def test_empty_completions_pass_0_of_164():
    scores = score(_all(lambda p: ""), _sandbox(NamespaceSandbox), workers=2)
    assert (scores.problems, scores.solved, scores.pass_at_1) == (164, 0, 0.0)
    # an empty body is the prompt's docstring alone: the tests fail (None != expected) or crash on None
    assert scores.counts["assertion"] + scores.counts["crash"] == 164


def test_outcome_kinds(box):
    task = "HumanEval/0"
    canonical = problems()[task]["canonical_solution"]
    cases = {
        "passed": canonical,
        "assertion": "    return False\n",
        "syntax_error": "    return (((\n",
        "crash": "    raise RuntimeError('boom')\n",
        "timeout": "    while True:\n        pass\n",
    }
    for want, completion in cases.items():
        result = score({task: completion}, box).results[0]
        assert result.outcome == want, (want, result)


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _hostile(results: Path, marker: Path) -> dict[str, str]:
    """A completion for HumanEval/0 per attack: each does harm if it can, then returns a wrong answer."""
    me = os.getpid()
    return {
        "endless loop": "    while True:\n        pass\n",
        "sleep forever": "    import time\n    time.sleep(10 ** 6)\n",
        "fork bomb": ("    import os\n    while True:\n        try:\n            os.fork()\n"
                      "        except OSError:\n            pass\n"),
        "write outside its temp dir": (f"    open({str(results / 'evil.txt')!r}, 'w').write('x')\n"
                                       f"    open({str(marker)!r}, 'w').write('x')\n    return None\n"),
        "network connection": ("    import socket\n"
                               "    socket.create_connection(('1.1.1.1', 53), timeout=2).send(b'x')\n"
                               "    socket.create_connection(('127.0.0.1', 22), timeout=2)\n    return None\n"),
        "huge allocation": "    x = bytearray(64 * 2 ** 30)\n    return None\n",
        "os.kill of its parent": (f"    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n"
                                  f"    os.kill({me}, signal.SIGKILL)\n    return None\n"),
        "escape with setsid": ("    import os, time\n    if os.fork() == 0:\n        os.setsid()\n"
                               "        time.sleep(10 ** 6)\n    return None\n"),
    }


def _ticks_since_boot() -> int:
    return int(float(Path("/proc/uptime").read_text().split()[0]) * os.sysconf("SC_CLK_TCK"))


def _uid_processes(uid: int, started_after: int = 0) -> set[int]:
    """Processes of ``uid`` started after ``started_after`` (clock ticks since boot). The start time
    matters: a daemon of the host running as nobody (its /proc entry owned by root while it is not
    dumpable) is no sandboxed process."""
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if d.stat().st_uid != uid:
                    continue
                start = int((d / "stat").read_text().rsplit(")", 1)[1].split()[19])
            except (OSError, ValueError, IndexError):
                continue
            if start >= started_after:
                out.add(int(d.name))
    return out


def _outliving(uid: int, started_after: int, wait_s: float = 5.0) -> dict[int, str]:
    """The sandboxed processes still alive ``wait_s`` after the last sandbox ended (a killed PID
    namespace is torn down by the kernel, which may take a moment on a loaded host)."""
    deadline = time.monotonic() + wait_s
    while (left := _uid_processes(uid, started_after)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return {pid: _describe(pid) for pid in left}


def _describe(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "(gone)"


def test_hostile_completions_fail_in_time_and_leave_everything_untouched(box, tmp_path):
    results = tmp_path / "results"
    (results / "run-1").mkdir(parents=True)
    (results / "run-1" / "run.json").write_text('{"status": "complete"}')
    os.chmod(results, 0o777)      # even a folder anyone may write stays untouched
    marker = Path("/tmp") / f"wattserve-hostile-{os.getpid()}"
    before = _tree_digest(results)
    test_started = _ticks_since_boot()
    containers = lambda: subprocess.run(  # noqa: E731
        ["docker", "ps", "-aq", "--filter", "label=wattserve.role=sandbox"],
        capture_output=True, text=True).stdout.split() if isinstance(box, DockerSandbox) else []
    for name, completion in _hostile(results, marker).items():
        t0 = time.monotonic()
        result = score({"HumanEval/0": completion}, box).results[0]
        took = time.monotonic() - t0
        assert result.outcome != "passed", name
        assert took < LIMITS.time_s + LIMITS.start_s, (name, took)
        assert _tree_digest(results) == before, name
        assert not marker.exists(), name
        assert containers() == [], name
    assert _outliving(65534, test_started) == {}, "a sandboxed process outlived its sandbox"
    assert os.getppid() != 1  # the caller's parent is alive and so are we


def test_a_completion_that_exits_early_is_a_crash_not_a_pass(box):
    for exit_call in ("import sys; sys.exit(0)", "import os; os._exit(0)", "quit()"):
        completion = f"    pass\n{exit_call}\n"
        assert score({"HumanEval/0": completion}, box).results[0].outcome == "crash", exit_call


def test_output_flood_does_not_reach_the_caller(box):
    completion = "    import sys\n    for _ in range(10 ** 5):\n        print('x' * 1000); sys.stderr.write('y' * 1000)\n"
    assert score({"HumanEval/0": completion}, box).results[0].outcome in ("assertion", "timeout")


def test_unsafe_local_is_labelled_everywhere(tmp_path):
    completions = tmp_path / "c.jsonl"
    completions.write_text(json.dumps({"task_id": "HumanEval/0",
                                       "completion": problems()["HumanEval/0"]["canonical_solution"]}) + "\n")
    scores = score(read_completions(completions), UnsafeLocal(LIMITS))
    assert scores.solved == 1 and scores.summary()["unsafe"] is True
    assert "UNSAFE-LOCAL" in scores.text()
    r = subprocess.run([sys.executable, "-m", "scoring", str(completions), "--unsafe-local-exec", "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["isolation"]["isolation"] == "unsafe-local" and summary["unsafe"] is True


def test_no_sandbox_refuses_and_says_how_to_enable(monkeypatch):
    monkeypatch.setenv("DOCKER", "/bin/false")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SandboxUnavailable) as err:
        choose("auto")
    msg = str(err.value)
    assert "docker" in msg and "namespace: needs root" in msg and "--unsafe-local-exec" in msg


def test_cli_refusal_exit_3_and_bad_input_exit_2(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"task_id": "HumanEval/0", "completion": ""}) + "\n")
    env = {**os.environ, "DOCKER": "/bin/false", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "scoring", str(good), "--isolation", "docker"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 3 and "To enable one" in r.stderr
    for text, want in [("not json\n", "not JSON"), ('{"task_id": "HumanEval/999", "completion": ""}\n', "not HumanEval"),
                       ('{"task_id": "HumanEval/0"}\n', "string task_id and completion"),
                       ('{"task_id": "HumanEval/0", "completion": ""}\n' * 2, "appears twice"), ("", "no completions")]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text)
        r = subprocess.run([sys.executable, "-m", "scoring", str(bad), "--unsafe-local-exec"],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert r.returncode == 2 and want in r.stderr, (text, r.stderr)


def test_missing_completions_count_as_not_solved():
    canonical = problems()["HumanEval/0"]["canonical_solution"]
    scores = score({"HumanEval/0": canonical, "HumanEval/1": None}, UnsafeLocal(LIMITS),
                   task_ids=["HumanEval/0", "HumanEval/1", "HumanEval/2"])
    assert (scores.problems, scores.solved, scores.counts["missing"]) == (3, 1, 2)
    assert scores.pass_at_1 == pytest.approx(1 / 3)
