"""Studies: the plan, bad specs, and the faults a multi-day study meets, each injected for real.

The slow tests run real studies (tiny, 8 new tokens, one thread, sub-second idle windows) as
subprocesses and hurt them the way days of machine time do: SIGKILL of the runner mid-inference and
mid-rest, SIGKILL of the service, a service that hangs (SIGSTOP), an exporter that dies, a results
folder that is read-only or full. (Sensor faults inside one run: test_sensor_faults.py.)
"""

from __future__ import annotations

import csv
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from loadgen.study import (ABANDONED, Cell, StudyError, check, load_or_create_plan, load_spec, run_order,
                           study_lock)
from services.inference.variants import expand_variants
from tests.conftest import ROOT
from tests.loadgen.conftest import bench_env, gone, manifest, recorded_rows

STUDIES = ROOT / "studies"


def write_spec(tmp_path: Path, name: str = "s", protocol: dict | None = None, **over) -> Path:
    spec = {"name": name, "models": ["tiny"], "configs": ["torch-cpu"], "repetitions": 1, "seed": 5,
            "retries": 1, "runner": "native", "results": str(tmp_path / "results"),
            "protocol": {"warmup_s": 0.5, "cooldown_s": 0.5, "rest_s": 0, "max_new_tokens": 8, "threads": 1,
                         **(protocol or {})}}
    spec.update(over)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def study_cmd(spec: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "loadgen.study", str(spec), *args]


def run_study(spec: Path, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(study_cmd(spec, *args), cwd=ROOT, env=bench_env(**env), capture_output=True, text=True,
                          timeout=timeout)


class Study:
    """A study runner in the background, its output collected line by line."""

    def __init__(self, spec: Path, *args: str, **env: str) -> None:
        self.proc = subprocess.Popen(study_cmd(spec, *args), cwd=ROOT, env=bench_env(**env), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_line(self, text: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            assert self.proc.poll() is None, f"study exited before {text!r}:\n{self.output}"
            time.sleep(0.05)
        raise TimeoutError(f"no line with {text!r} in {timeout}s:\n{self.output}")

    def descendants(self, needle: str = "") -> list[psutil.Process]:
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        out = []
        for k in kids:
            try:
                if needle in " ".join(k.cmdline()):
                    out.append(k)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                pass
        return out

    def one(self, needle: str, timeout: float = 60) -> psutil.Process:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.descendants(needle)
            if found:
                return found[0]
            time.sleep(0.05)
        raise TimeoutError(f"no child process running {needle!r}:\n{self.output}")

    def kill(self) -> list[psutil.Process]:
        """SIGKILL the runner alone (as the OOM killer or a power cut would); its children as they were."""
        kids = self.descendants()
        self.proc.kill()
        self.proc.wait(30)
        return kids


def wait_gone(procs: list[psutil.Process], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(gone(p) for p in procs):
        time.sleep(0.1)
    left = [(p.pid, p.cmdline()) for p in procs if not gone(p)]
    assert not left, f"orphans survived the runner: {left}"


def wait_for_new_run_rows(runs: Path, n: int, study: Study, seen: set[Path], timeout: float = 240) -> Path:
    """A run folder not in ``seen`` whose replay has recorded ``n`` requests (inference under way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert study.proc.poll() is None, f"study exited early:\n{study.output}"
        for d in sorted(runs.glob("*")) if runs.is_dir() else []:
            if d not in seen and recorded_rows(d) >= n:
                seen.add(d)
                return d
        time.sleep(0.05)
    raise TimeoutError(f"no new run reached {n} requests in {timeout}s:\n{study.output}")


def run_manifests(study_dir: Path) -> list[dict]:
    return [manifest(d) for d in sorted((study_dir / "runs").iterdir()) if (d / "run.json").exists()]


# ------------------------------------------------------------------------------------ fast

def test_order_is_repetition_major_seeded_and_interleaved():
    models, configs = ["a", "b"], ["torch-cpu", "onnx-cpu", "ov-cpu"]
    order = run_order(models, configs, 4, seed=11)
    assert order == run_order(models, configs, 4, seed=11)  # the recorded seed gives the same order back
    assert order != run_order(models, configs, 4, seed=12)
    cells = {Cell(m, c, 1) for m in models for c in configs}
    for rep in range(1, 5):  # every cell gets its n-th run before any gets its (n+1)-th
        block = order[(rep - 1) * 6: rep * 6]
        assert {Cell(x.model, x.config, 1) for x in block} == cells and {x.rep for x in block} == {rep}
    blocks = [[(x.model, x.config) for x in order[i:i + 6]] for i in range(0, 24, 6)]
    assert len({tuple(b) for b in blocks}) > 1  # shuffled anew in every repetition, not one fixed order


def test_shipped_specs():
    paper = load_spec(STUDIES / "paper.yaml")
    from services.models.resolve import registry

    assert paper.models == list(registry()) and len(paper.models) == 12
    assert paper.configs == ["torch-cpu", "torch-cuda", "onnx-cpu", "onnx-cuda", "ov-cpu", "jit-cpu", "jit-cuda"]
    assert paper.repetitions == 10 and paper.protocol.prompts == "paper"
    assert (paper.protocol.warmup_s, paper.protocol.cooldown_s) == (300, 300) and paper.protocol.rest_s > 0
    assert paper.protocol.max_length == 128 and paper.protocol.max_new_tokens is None
    r = run_study(STUDIES / "paper.yaml", "--dry-run", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "840 runs (12 model(s) x 7 configuration(s) x 10 repetition(s))" in r.stdout
    smoke = load_spec(STUDIES / "smoke.yaml")
    assert smoke.models == ["tiny"] and smoke.runner == "native" and smoke.seed is not None
    r = run_study(STUDIES / "smoke.yaml", "--dry-run", timeout=120)  # runs here: no GPU, no hub
    n = len(expand_variants("cpu"))  # every CPU configuration that can run here (an opt-in one not installed: left out)
    assert smoke.configs == ["cpu"]
    assert r.returncode == 0 and f"{2 * n} runs (1 model(s) x {n} configuration(s) x 2 repetition(s))" in r.stdout, r.stderr
    r = run_study(STUDIES / "precision.yaml", "--dry-run", timeout=120)
    assert r.returncode == 0 and "12 runs (1 model(s) x 4 configuration(s) x 3 repetition(s))" in r.stdout, r.stderr
    assert "ov-cpu@int8 r1" in r.stdout and "onnx-cpu r1" in r.stdout


@pytest.mark.parametrize("change, message", [
    ({"protocol": {"wramup_s": 1}}, "protocol.wramup_s: unknown key (did you mean 'warmup_s'?)"),
    ({"repetitons": 2}, "repetitons: unknown key (did you mean 'repetitions'?)"),
    ({"repetitions": 0}, "repetitions: Input should be greater than or equal to 1"),
    ({"configs": ["ov-cuda"]}, "OpenVINO has no CUDA"),
    ({"configs": ["tensorrt-cpu"]}, "unknown configuration 'tensorrt-cpu'"),
    ({"configs": ["torch-cpu", "torch-cpu"]}, "listed twice"),
    ({"configs": ["jit-cpu"], "precisions": ["int8"]}, "jit-cpu@int8: engine 'jit' does not serve precision 'int8'"),
    ({"precisions": ["int3"]}, "unknown precision 'int3'"),
    ({"precisions": []}, "precisions: List should have at least 1 item"),
    ({"models": ["no-such-model"]}, "unknown model 'no-such-model'"),
    ({"models": []}, "models: List should have at least 1 item"),
    ({"runner": "kubernetes"}, "runner: Input should be 'auto', 'native' or 'docker'"),
    ({"protocol": {"prompts": "/nonexistent.jsonl"}}, "protocol.prompts:"),
    ({"protocol": {"max_new_tokens": 8, "max_length": 64}}, "give max_new_tokens or max_length, not both"),
    ({"protocol": {"stream": True, "max_new_tokens": None, "max_length": 64}}, "stream: true needs max_new_tokens"),
    ({"protocol": {"prompts": "humaneval", "max_new_tokens": None, "max_length": 300}},
     "the humaneval workload takes max_new_tokens (prompts are whole problems), not max_length"),
    ({"protocol": {"prompts": "humaneval", "score_isolation": "chroot"}},
     "protocol.score_isolation: Input should be 'auto', 'docker', 'namespace' or 'unsafe-local'"),
    ({"protocol": {"rest_s": -1}}, "protocol.rest_s: Input should be greater than or equal to 0"),
    ({"protocol": {"warmup_s": "nan"}}, "protocol.warmup_s"),
    ({"name": "../escape"}, "name: String should match pattern"),
    ({"protocol": {"sensors": {"cpu": "rapl", "gpux": "none"}}}, "protocol.sensors.gpux: unknown key (did you mean 'gpu'?)"),
    ({"protocol": {"sensors": {"cpu": "turbo"}}}, "protocol.sensors.cpu: Input should be 'auto', 'rapl'"),
    ({"protocol": {"sensors": {"gpu": "cuda"}}}, "protocol.sensors: gpu sensor 'cuda': choose one of"),
    ({"protocol": {"sensors": {"cpu": "rapl", "tdp_watts": 65}}}, "tdp_watts/idle_watts set the estimate"),
    ({"protocol": {"sensors": {"tdp_watts": 0}}}, "protocol.sensors.tdp_watts: Input should be greater than 0"),
    ({"protocol": {"sensors": "maybe"}}, "protocol.sensors: true, false or a mapping"),
    ({"protocol": {"sensors": {"wall": "http://u:pw@127.0.0.1:9/netio.json"}}}, "NETIO_USER / NETIO_PASSWORD"),
    # valid, but not on this machine: said before anything starts
    ({"protocol": {"sensors": {"cpu": "energibridge", "energibridge_bin": "/nonexistent/eb"}}},
     "protocol.sensors: cpu sensor energibridge: no EnergiBridge binary '/nonexistent/eb'"),
    ({"protocol": {"sensors": {"gpu": "dcgm=http://127.0.0.1:9/metrics"}}}, "protocol.sensors: gpu sensor dcgm"),
])
def test_bad_specs_are_refused_before_anything_starts(tmp_path, change, message):
    change = dict(change)
    spec = write_spec(tmp_path, protocol=change.pop("protocol", None), **change)
    r = run_study(spec, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr, r.stderr
    assert not (tmp_path / "results").exists()  # no folder, no service, no Locust


def test_sensor_choice_in_a_spec(tmp_path):
    """A mapping is the choice (checked like every key); true stays true, so the digest of a spec written
    before sensors could be chosen does not change (its study resumes)."""
    from loadgen.study import spec_digest

    spec = load_spec(write_spec(tmp_path, protocol={"sensors": {"cpu": "estimate", "tdp_watts": 65, "gpu": "none",
                                                                "wall": "none"}}))
    choice = spec.protocol.sensors.choice()
    assert (choice.cpu, choice.gpu, choice.wall, choice.tdp_watts) == ("estimate", "none", "none", 65.0)
    old = load_spec(write_spec(tmp_path, name="old"))
    assert old.protocol.sensors is True
    assert old.protocol.model_dump(mode="json")["sensors"] is True and len(spec_digest(old)) == 64
    assert check(spec, tmp_path / "s.yaml").study_dir.name == "s"


def test_a_study_can_choose_the_humaneval_workload(tmp_path):
    """prompts: humaneval - max_new_tokens 192 unless given, the sandbox checked before anything starts,
    each cell's run scored where the spec says; where completions are scored is not part of the digest."""
    from loadgen.study import spec_digest
    from loadgen.study.cellrun import cell_run_plan

    spec = load_spec(write_spec(tmp_path, protocol={"prompts": "humaneval", "max_new_tokens": None,
                                                    "score_isolation": "namespace"}))
    assert spec.protocol.max_new_tokens == 192 and spec.protocol.max_length is None
    chk = check(spec, tmp_path / "s.yaml")
    assert chk.prompts.name == "humaneval" and chk.prompts.count == 164
    plan = load_or_create_plan(chk)
    run = cell_run_plan(chk, plan, Cell("tiny", "torch-cpu", 1), 1, 1, 1)
    assert run.prompts.name == "humaneval" and run.score_isolation == "namespace" and run.limits == (192, None)
    auto = load_spec(write_spec(tmp_path, name="s", protocol={"prompts": "humaneval", "max_new_tokens": None}))
    assert auto.protocol.score_isolation == "auto" and spec_digest(auto) == spec_digest(spec)
    r = run_study(write_spec(tmp_path, name="h", protocol={"prompts": "humaneval"}), "--dry-run", timeout=120)
    assert r.returncode == 0 and "prompts humaneval (164)" in r.stdout, r.stdout + r.stderr


def test_a_humaneval_study_without_a_sandbox_stops_before_anything_starts(tmp_path):
    spec = write_spec(tmp_path, protocol={"prompts": "humaneval", "score_isolation": "docker"})
    r = run_study(spec, timeout=120, DOCKER="/bin/false")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "protocol.score_isolation:" in r.stderr and "To enable one" in r.stderr
    assert not (tmp_path / "results").exists()


def test_unreadable_specs_say_why(tmp_path):
    missing = run_study(tmp_path / "nope.yaml", timeout=60)
    assert missing.returncode == 2 and "no spec file" in missing.stderr and "studies/smoke.yaml" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [tiny\n")
    r = run_study(bad, timeout=60)
    assert r.returncode == 2 and "not valid YAML" in r.stderr
    bad.write_bytes(b"\xff\xfe\x00models")
    r = run_study(bad, timeout=60)
    assert r.returncode == 2 and "not valid YAML" in r.stderr
    bad.write_text("- just\n- a list\n")
    r = run_study(bad, timeout=60)
    assert r.returncode == 2 and "a study spec is a mapping" in r.stderr


def test_a_changed_spec_is_refused_on_resume_and_one_runner_per_study(tmp_path):
    spec_path = write_spec(tmp_path, repetitions=2)
    chk = check(load_spec(spec_path), spec_path)
    plan = load_or_create_plan(chk)
    assert plan["seed"] == 5 and len(plan["order"]) == 2
    assert load_or_create_plan(chk)["created_at"] == plan["created_at"]  # resumed, not remade
    changed = write_spec(tmp_path, repetitions=3)
    with pytest.raises(StudyError, match=r"started with another spec \(repetitions: 2 -> 3\)"):
        load_or_create_plan(check(load_spec(changed), changed))
    with study_lock(chk.study_dir):
        with pytest.raises(StudyError, match="is already running"):
            with study_lock(chk.study_dir):
                pass
    with study_lock(chk.study_dir):  # released with its holder
        pass


def tiny_mount_available() -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare command"
    out = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True)
    return None if out.returncode == 0 else f"cannot mount a tmpfs in a private mount namespace: {out.stderr!r}"


def in_small_mount(mount: Path, options: str, cmd: list[str], fill: bool = False) -> subprocess.CompletedProcess:
    """``cmd`` with a tmpfs of its own on ``mount`` (a private mount namespace: nothing to clean up)."""
    fill_cmd = 'dd if=/dev/zero of="$0/fill" bs=4k 2>/dev/null; ' if fill else ""
    script = f'mount -t tmpfs -o {options} tmpfs "$0" && {fill_cmd}exec "$@"'
    mount.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(mount), *cmd],
                          cwd=ROOT, env=bench_env(), capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("options, fill, message", [
    ("ro,size=8m", False, "is not writable (Read-only file system)"),
    ("size=1m", False, "only 1.0 MiB free on the file system of"),
    ("size=1m", True, "is full (No space left on device)"),
])
def test_a_results_folder_that_is_read_only_or_full_is_refused_before_anything_starts(tmp_path, options, fill,
                                                                                       message):
    why = tiny_mount_available()
    if why:
        pytest.skip(why)
    mount = tmp_path / "small"
    spec = write_spec(tmp_path, results=str(mount / "results"))
    r = in_small_mount(mount, options, study_cmd(spec), fill)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr, r.stderr
    assert "[run" not in r.stdout + r.stderr  # nothing started
    bench = in_small_mount(mount, options, [sys.executable, "-m", "loadgen.bench", "--config", "torch-cpu",
                                            "--results", str(mount / "results")], fill)
    assert bench.returncode == 2 and message in bench.stderr, bench.stderr


# ------------------------------------------------------------------------------------ slow: real studies

@pytest.mark.slow
def test_runner_killed_mid_inference_and_mid_rest_resumes_with_no_run_lost_or_duplicated(tmp_path, tiny):
    spec = write_spec(tmp_path, repetitions=3, protocol={"rest_s": 4})
    study_dir = tmp_path / "results" / "s"
    runs = study_dir / "runs"
    seen: set[Path] = set()

    first = Study(spec)
    cut = wait_for_new_run_rows(runs, 20, first, seen)
    for needle in ("services.inference", "locust", "services.exporters.host"):
        assert first.descendants(needle), f"no {needle} under the runner mid-inference"
    children = first.kill()  # SIGKILL mid-inference
    wait_gone(children)  # the service, Locust and the exporters die with the runner
    assert manifest(cut)["status"] == "running"  # cut off: never looks complete

    second = Study(spec)
    second.wait_line(f"resume: {cut.name} (tiny torch-cpu r")
    second.wait_line("): complete")
    second.wait_line("| rest")
    wait_gone(second.kill())  # SIGKILL mid-rest, right after a complete run

    third = run_study(spec)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "complete 3 | failed after retries 0 | to do 0" in third.stdout

    ms = run_manifests(study_dir)
    complete = [m for m in ms if m["status"] == "complete"]
    assert sorted(m["study"]["cell"]["rep"] for m in complete) == [1, 2, 3]  # none lost, none twice
    cut_m = manifest(cut)
    assert cut_m["status"] == "failed" and cut_m["error"] == ABANDONED and cut_m["abandoned"] is True
    from loadgen.runfolder import read_requests, validate_run

    assert len(read_requests(cut / "requests.csv")) >= 20  # its rows were kept, not lost
    validate_run(cut)
    assert len(ms) == 4  # three complete runs and the cut-off one; the run before the rest was not redone
    last_two = sorted(complete, key=lambda m: m["created_at"])[-2:]  # both made by the third invocation
    assert last_two[1]["created_at"] - last_two[0]["finished_at"] >= 4  # the rest really waited
    from analysis.runs import discover

    usable, left_out = discover(study_dir)
    assert len(usable) == 3 and {m["study"]["cell"]["rep"] for _, m in usable} == {1, 2, 3}
    assert [x for x in left_out if "failed" in str(x)]  # the abandoned run is listed as left out, not counted
    assert "complete 3" in (study_dir / "summary.md").read_text()


@pytest.mark.slow
def test_service_killed_then_hung_then_an_exporter_dies_runs_fail_are_retried_and_flagged(tmp_path, tiny):
    spec = write_spec(tmp_path, retries=2, protocol={"request_timeout_s": 3})
    study_dir = tmp_path / "results" / "s"
    runs = study_dir / "runs"
    seen: set[Path] = set()
    study = Study(spec)

    # attempt 1: the service is killed mid-inference
    a1 = wait_for_new_run_rows(runs, 10, study, seen)
    study.one("services.inference").kill()
    # attempt 2: the service hangs (SIGSTOP) mid-inference
    a2 = wait_for_new_run_rows(runs, 10, study, seen)
    hung = study.one("services.inference")
    hung.suspend()
    stopped_at = time.time()
    # attempt 3: an exporter dies mid-inference; the run itself completes
    a3 = wait_for_new_run_rows(runs, 10, study, seen)
    assert gone(hung)  # the hung service was stopped before the retry began
    study.one("services.exporters.estimate").kill()
    assert study.proc.wait(300) == 0, study.output

    m1, m2, m3 = manifest(a1), manifest(a2), manifest(a3)
    assert m1["status"] == "failed" and "exited with code -9 during inference" in m1["error"]
    assert m2["status"] == "failed" and "got no answer" in m2["error"] and "hung" in m2["error"]
    print(f"\n[hung service] SIGSTOP to run failed and service stopped: {m2['finished_at'] - stopped_at:.1f} s "
          f"(request timeout 3 s)")
    assert m2["finished_at"] - stopped_at < 3 + 30  # one request timeout and the stop, not 164 timeouts
    assert [m["study"]["attempt"] for m in (m1, m2, m3)] == [1, 2, 3]

    assert m3["status"] == "complete"
    sensors = {s["name"]: s for s in m3["sensors"]}
    assert sensors["estimate"]["available"] is False and "stopped answering" in sensors["estimate"]["error"]
    assert sensors["host"]["available"] is True
    assert any(f.startswith("sensor estimate unavailable") for f in m3["flags"])
    e = m3["summary"]["energy"]
    cpu = {"joules": e.get("energy_cpu_j"), "complete": e.get("energy_cpu_complete")}
    assert cpu["joules"] is None or cpu["complete"] is False  # missing or marked incomplete, never a silent 0 J
    assert cpu["joules"] != 0
    from loadgen.summary import energy_cell

    assert "incomplete" in energy_cell(m3) or energy_cell(m3).startswith("missing (cpu")
    print(f"\n[exporter killed] cpu energy {cpu['joules']} (complete {cpu['complete']}); table: {energy_cell(m3)}")
    assert "failed attempts 2" in study.output and "flagged runs" in study.output


@pytest.mark.slow
def test_a_cell_that_keeps_failing_is_retried_to_its_limit_then_reported(tmp_path, tiny):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "gpt2"}')  # passes the check, cannot be loaded
    spec = write_spec(tmp_path, models=["tiny", str(broken)], retries=1, protocol={"rest_s": 0.5})
    r = run_study(spec)
    assert r.returncode == 1, r.stdout + r.stderr
    ms = run_manifests(tmp_path / "results" / "s")
    by_model: dict[str, list[str]] = {}
    for m in ms:
        by_model.setdefault(m["study"]["cell"]["model"], []).append(m["status"])
    assert by_model == {"tiny": ["complete"], str(broken): ["failed", "failed"]}  # 1 + retries attempts, no more
    assert "complete 1 | failed after retries 1 | to do 0 | failed attempts 2" in r.stdout
    assert f"- {broken} torch-cpu r1: 2 failed attempt(s); last: the torch-cpu service exited with code 1" in r.stdout
    again = run_study(spec)  # a resume does not spend attempts the cell no longer has
    assert again.returncode == 1 and "runs started this time 0" in again.stdout
    assert len(run_manifests(tmp_path / "results" / "s")) == 3
    fresh = run_study(spec, "--retry-failed")  # once the cause is fixed (here it is not): a new set of attempts
    assert fresh.returncode == 1 and "runs started this time 2" in fresh.stdout and "failed attempts 4" in fresh.stdout
    assert len(run_manifests(tmp_path / "results" / "s")) == 5  # the complete cell was not run again


def test_marking_a_cut_off_run_twice_keeps_its_rows(tmp_path):
    """A resume itself cut off between finalizing the rows and rewriting run.json loses nothing."""
    from loadgen.runfolder import REQUEST_COLUMNS, RunFolder, read_requests
    from loadgen.study import abandon

    folder = RunFolder.create(tmp_path, "torch-cpu", "tiny", 1)
    row = {c: "" for c in REQUEST_COLUMNS} | {"index": 0, "task_id": "T/0", "start": 1.7e9, "end": 1.7e9 + 1,
                                              "latency_s": 1, "http_status": 200, "status": "ok", "prompt_tokens": 3,
                                              "completion_tokens": 2, "output": "x", "token_ids": "1 2"}
    with open(folder.raw_requests_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=REQUEST_COLUMNS)
        w.writeheader()
        w.writerow(row)
    m = {"run_id": folder.run_id, "status": "running", "runner": "native", "summary": {}}
    folder.finalize_requests()  # the first resume got this far, then died
    m = abandon(folder.path, m)
    assert m["status"] == "failed" and m["abandoned"] and m["summary"]["recorded"] == 1
    assert [r["task_id"] for r in read_requests(folder.requests_path)] == ["T/0"]


@pytest.mark.slow
def test_ctrl_c_stops_the_study_cleanly_and_the_same_command_continues(tmp_path, tiny):
    spec = write_spec(tmp_path)
    study_dir = tmp_path / "results" / "s"
    study = Study(spec)
    cut = wait_for_new_run_rows(study_dir / "runs", 10, study, set())
    children = study.descendants()
    study.proc.send_signal(signal.SIGINT)
    assert study.proc.wait(90) == 130, study.output
    wait_gone(children)
    assert manifest(cut)["status"] == "interrupted"
    assert "to do 1" in study.output and "run the same command again" in study.output
    again = run_study(spec)
    assert again.returncode == 0, again.stdout + again.stderr
    assert sorted(m["status"] for m in run_manifests(study_dir)) == ["complete", "interrupted"]


def test_a_precision_list_makes_one_cell_per_variant(tmp_path):
    """precisions: [fp32, int8] runs every configuration at each; a cell's config is the variant label, and its
    run plan carries the precision apart (what the service is started with)."""
    from loadgen.study.cellrun import cell_run_plan

    spec = write_spec(tmp_path, configs=["onnx-cpu", "ov-cpu@int4"], precisions=["fp32", "int8"])
    r = run_study(spec, "--dry-run", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "3 runs (1 model(s) x 3 configuration(s) x 1 repetition(s))" in r.stdout
    for name in ("tiny onnx-cpu r1", "tiny onnx-cpu@int8 r1", "tiny ov-cpu@int4 r1"):
        assert name in r.stdout
    chk = check(load_spec(spec), spec)
    assert chk.configs == ["onnx-cpu", "onnx-cpu@int8", "ov-cpu@int4"]
    plan = load_or_create_plan(chk)
    run = cell_run_plan(chk, plan, Cell("tiny", "onnx-cpu@int8", 1), 1, 3, 1)
    assert (run.config, run.precision) == ("onnx-cpu", "int8")
    assert cell_run_plan(chk, plan, Cell("tiny", "onnx-cpu", 1), 1, 3, 1).precision == "fp32"


def test_keys_added_later_at_their_defaults_keep_a_begun_studys_digest(tmp_path):
    """A study begun before precisions: / protocol.stream existed resumes under the same digest; giving
    either a value of its own is a different study."""
    from loadgen.study.plan import spec_digest

    plain = spec_digest(load_spec(write_spec(tmp_path, name="a")))
    assert spec_digest(load_spec(write_spec(tmp_path, name="a", precisions=["fp32"]))) == plain
    assert spec_digest(load_spec(write_spec(tmp_path, name="a", protocol={"stream": False}))) == plain
    assert spec_digest(load_spec(write_spec(tmp_path, name="a", precisions=["fp32", "int8"]))) != plain
    streamed = load_spec(write_spec(tmp_path, name="a", protocol={"stream": True}))
    assert spec_digest(streamed) != plain and streamed.protocol.stream is True


def test_a_streamed_study_plans_streamed_runs(tmp_path):
    from loadgen.study.cellrun import cell_run_plan

    spec = write_spec(tmp_path, protocol={"stream": True})
    chk = check(load_spec(spec), spec)
    run = cell_run_plan(chk, load_or_create_plan(chk), Cell("tiny", "torch-cpu", 1), 1, 1, 1)
    assert run.stream is True and run.max_new_tokens == 8
