"""host.gpus from nvidia-smi, cell by cell: odd cells and lines are recorded as they are, never raised."""

from __future__ import annotations

import os
import stat

from loadgen import hostinfo


def test_a_normal_row():
    rows = hostinfo.parse_gpu_rows("0, NVIDIA H200, 143771, 580.95.05, GPU-1111\n")
    assert rows == [{"index": 0, "name": "NVIDIA H200", "memory_bytes": 143771 * 2**20, "driver": "580.95.05",
                     "uuid": "GPU-1111"}]


def test_cells_without_a_value_are_none():
    rows = hostinfo.parse_gpu_rows("0, NVIDIA A100, [N/A], [Not Supported], GPU-2222\n"
                                   "1, [Unknown Error], N/A, 580.1, [Insufficient Permissions]\n")
    assert rows[0]["memory_bytes"] is None and rows[0]["driver"] is None and rows[0]["uuid"] == "GPU-2222"
    assert rows[1]["name"] is None and rows[1]["uuid"] is None and rows[1]["index"] == 1


def test_mig_rows_odd_columns_and_names_with_commas_never_stop_the_bench():
    text = ("0, NVIDIA H100 80GB HBM3, 81559, 580.95.05, GPU-aaaa\n"
            "  MIG 1g.10gb     Device  0: (UUID: MIG-bbbb)\n"                # a MIG listing line
            "1, NVIDIA H200, NVL, 143771, 580.95.05, GPU-cccc\n"              # a name with a comma
            "2, NVIDIA L4, 23034, 580.95.05, GPU-dddd, 89.0, extra\n"         # columns a driver added
            "3, Tesla T4\n"                                                   # too few
            "\n"
            "x, y, z, w, v\n")                                                # nonsense of the right width
    rows = hostinfo.parse_gpu_rows(text)
    assert len(rows) == 6
    assert rows[0]["uuid"] == "GPU-aaaa" and "parse_note" not in rows[0]
    assert "parse_note" in rows[1] and "MIG-bbbb" in rows[1]["parse_note"]
    assert rows[2] == {"index": 1, "name": "NVIDIA H200, NVL", "memory_bytes": 143771 * 2**20,
                       "driver": "580.95.05", "uuid": "GPU-cccc"}
    assert rows[3]["uuid"] == "GPU-dddd" and rows[3]["parse_note"].startswith("7 columns, 5 asked")
    assert rows[4]["name"] == "Tesla T4" and rows[4]["uuid"] is None and "parse_note" in rows[4]
    assert rows[5]["index"] == "x" and rows[5]["memory_bytes"] is None


def test_gpus_runs_nvidia_smi_and_survives_its_output(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0, NVIDIA H200, [N/A], 580.95.05, GPU-1\\nMIG 3g.71gb Device 0\\n'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    got = hostinfo.gpus()
    assert [g["uuid"] for g in got] == ["GPU-1", None] and got[0]["memory_bytes"] is None
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2; exit 9\n")
    assert hostinfo.gpus() == []
