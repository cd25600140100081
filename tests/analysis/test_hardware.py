"""Hardware as a blocking factor: runs from different host fingerprints are never compared as one sample;
each fingerprint gets its own analysis (analysis/hardware.py), and --hardware takes one alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from analysis.cli import main
from loadgen.hostinfo import fingerprint
from tests.analysis.runfolders import write_cells

MACHINE_A = {"machine": "x86_64", "cpu_model": "EPYC 7763", "cpu_count": 64, "ram_bytes": 512 * 2**30,
             "gpus": [{"name": "NVIDIA A100-SXM4-80GB", "uuid": "GPU-aaaa", "memory_bytes": 80 * 2**30,
                       "driver": "550.54"}]}
# the same model of machine, another GPU board: not the same hardware
MACHINE_B = {**MACHINE_A, "gpus": [{**MACHINE_A["gpus"][0], "uuid": "GPU-bbbb"}]}


def set_host(folder: Path, host: dict | None) -> str | None:
    path = folder / "run.json"
    m = json.loads(path.read_text())
    if host is not None:
        m["host"] = {**m["host"], **host, "hostname": f"node-{host['gpus'][0]['uuid'][-4:]}",
                     "fingerprint": fingerprint(host)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(m))
    os.replace(tmp, path)
    return fingerprint(host)["short"] if host else None


def two_machines(root: Path, unknown: bool = False) -> dict[str, str]:
    """torch-cpu and onnx-cpu of one model, three repetitions each, on machine A; the same on machine B,
    where onnx-cpu looks much cheaper (another board): {run_id: fingerprint}."""
    cells = {("codeparrot-small", "torch-cpu"): {"cpu_busy_w": 40.0}, ("codeparrot-small", "onnx-cpu"): {"cpu_busy_w": 30.0}}
    fp = {}
    for i, (host, busy_shift) in enumerate([(MACHINE_A, 0.0), (MACHINE_B, -15.0)]):
        shifted = {k: {"cpu_busy_w": v["cpu_busy_w"] + (busy_shift if k[1] == "onnx-cpu" else 0.0)}
                   for k, v in cells.items()}
        for f in write_cells(root, shifted, start=1_790_000_000.0 + 10_000 * i, with_series=True):
            fp[f.name] = set_host(f, host)
    if unknown:  # a run from before fingerprints were recorded
        for f in write_cells(root, {("codeparrot-small", "torch-cpu"): {"cpu_busy_w": 40.0}}, reps=1,
                             start=1_790_100_000.0):
            fp[f.name] = None
    return fp


def analyse(root: Path, out: Path, *args) -> int:
    return main(["--results", str(root), "--out", str(out), "--quiet", "--no-figures", "--jobs", "1", *args])


def test_fingerprint_is_stable_and_names_what_changed():
    assert fingerprint(MACHINE_A) == fingerprint(json.loads(json.dumps(MACHINE_A)))
    a, b = fingerprint(MACHINE_A), fingerprint(MACHINE_B)
    assert a["sha256"] != b["sha256"] and a["short"] == a["sha256"][:12]
    assert fingerprint({**MACHINE_A, "ram_bytes": MACHINE_A["ram_bytes"] - 300 * 2**20})["sha256"] == a["sha256"], \
        "the kernel's reserve moving a few hundred MiB is the same machine"
    assert fingerprint({**MACHINE_A, "gpus": [{**MACHINE_A["gpus"][0], "driver": "535.1"}]})["sha256"] != a["sha256"]
    assert fingerprint({**MACHINE_A, "hostname": "renamed"})["sha256"] == a["sha256"]
    assert b["parts"]["gpus"][0]["uuid"] == "GPU-bbbb"


def test_host_info_records_the_fingerprint():
    from loadgen.hostinfo import host_info

    h = host_info()
    assert h["fingerprint"] == fingerprint(h) and len(h["fingerprint"]["sha256"]) == 64


def test_runs_from_two_fingerprints_are_analysed_apart_never_together(tmp_path):
    root, out = tmp_path / "results", tmp_path / "out"
    fp = two_machines(root, unknown=True)
    fa, fb = fingerprint(MACHINE_A)["short"], fingerprint(MACHINE_B)["short"]
    assert analyse(root, out) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert {r: (x if isinstance(x, str) else None) for r, x in zip(runs["run_id"], runs["host_fingerprint"])} == fp
    hw = pd.read_csv(out / "hardware.csv")
    assert sorted(hw["host_fingerprint"]) == sorted([fa, fb, "unknown"])
    assert dict(zip(hw["host_fingerprint"], hw["runs"])) == {fa: 6, fb: 6, "unknown": 1}
    assert "GPU-bbbb" in hw.set_index("host_fingerprint").loc[fb, "gpus"]
    # the combined comparison is refused: no combined medians, tests or savings
    for name in ("medians.csv", "stats.csv", "savings.csv", "aggregated.csv"):
        assert not (out / name).exists(), name
    report = (out / "report.md").read_text()
    assert "several hardware fingerprints" in report and f"hardware-{fa}/report.md" in report
    # each fingerprint: a whole analysis of its own runs only
    for f in (fa, fb):
        sub = out / f"hardware-{f}"
        sub_runs = pd.read_csv(sub / "runs.csv")
        assert set(sub_runs["run_id"]) == {r for r, x in fp.items() if x == f}
        assert (sub / "medians.csv").is_file() and (sub / "stats.csv").is_file() and (sub / "report.md").is_file()
    med_a = pd.read_csv(out / f"hardware-{fa}" / "medians.csv").set_index("config")
    med_b = pd.read_csv(out / f"hardware-{fb}" / "medians.csv").set_index("config")
    # machine B's onnx-cpu is cheaper (CPU energy ESTIMATED here, as in the synthetic runs); a combined median
    # would have blurred both
    assert med_b.loc["onnx-cpu", "energy_cpu_j"] < med_a.loc["onnx-cpu", "energy_cpu_j"]
    assert med_b.loc["torch-cpu", "energy_cpu_j"] == pytest.approx(med_a.loc["torch-cpu", "energy_cpu_j"])


def test_one_fingerprint_alone_and_a_single_fingerprint_tree_analyse_as_before(tmp_path):
    root = tmp_path / "results"
    fp = two_machines(root)
    fa = fingerprint(MACHINE_A)["short"]
    out = tmp_path / "one"
    assert analyse(root, out, "--hardware", fa) == 0
    assert set(pd.read_csv(out / "runs.csv")["run_id"]) == {r for r, x in fp.items() if x == fa}
    assert (out / "medians.csv").is_file() and not list(out.glob("hardware-*"))
    assert analyse(root, tmp_path / "typo", "--hardware", "0123456789ab") == 2


def test_runs_without_a_fingerprint_analyse_as_before(tmp_path):
    root, out = tmp_path / "results", tmp_path / "out"
    write_cells(root, {("codeparrot-small", "torch-cpu"): {"cpu_busy_w": 40.0},
                       ("codeparrot-small", "onnx-cpu"): {"cpu_busy_w": 30.0}})
    assert analyse(root, out) == 0
    assert (out / "medians.csv").is_file() and not (out / "hardware.csv").exists()
