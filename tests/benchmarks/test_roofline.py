"""benchmarks/roofline.py: the weight bytes it divides by, the bandwidth it measures, the rows it plans and
refuses, and one real run on ``tiny`` (two configurations, a refused precision) whose table and JSON
must hold roofline = bandwidth / weight bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import bandwidth, roofline
from benchmarks.roofline_row import streamed_bytes, weight_bytes

ROOT = Path(__file__).resolve().parents[2]


def _lm(tied: bool):
    """An embedding, a Linear layer, an LM head (tied to the embedding or not) and a causal-mask buffer."""
    import torch
    from torch import nn

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.fc, self.head = nn.Embedding(100, 16), nn.Linear(16, 16), nn.Linear(16, 100, bias=False)
            if tied:
                self.head.weight = self.wte.weight
            self.register_buffer("mask", torch.ones(64, 64, dtype=torch.bool))  # not a weight: never counted

        def forward(self, ids):
            return self.head(self.fc(self.wte(ids)))

    return LM().eval()


def test_a_tied_head_reads_the_embedding_whole_and_an_untied_embedding_is_left_out():
    fc = 16 * 16 * 4 + 16 * 4
    assert streamed_bytes(_lm(tied=True)) == (100 * 16 * 4 + fc, 0)
    assert streamed_bytes(_lm(tied=False)) == (100 * 16 * 4 + fc, 100 * 16 * 4)  # the head's own copy is read


def test_dynamic_int8_layers_count_their_int8_weights_and_the_float_embedding_is_only_looked_up():
    from services.inference.engines.lower_precision import torch_int8_dynamic

    quantized = torch_int8_dynamic(_lm(tied=True))
    # head: int8 copy of the tied table (1 byte each); fc: int8 weight + fp32 bias; the fp32 embedding is
    # now read by no Linear layer: left out
    assert streamed_bytes(quantized) == (100 * 16 + 16 * 16 + 16 * 4, 100 * 16 * 4)
    source = weight_bytes(SimpleNamespace(model_obj=quantized))[1]
    assert source == "loaded model (SimpleNamespace.model_obj: its weights, less 0.0 MB of embedding tables only looked up)"


def test_a_torchscript_graph_counts_as_the_eager_model_it_was_traced_from():
    import torch

    model = _lm(tied=True)
    traced = torch.jit.trace(model, torch.tensor([[1, 2, 3]]))
    assert streamed_bytes(traced) == streamed_bytes(model)
    assert weight_bytes(SimpleNamespace(model_obj=None, decode=traced))[0] == streamed_bytes(model)[0]


def test_an_artifact_counts_its_weight_files_only_and_none_is_unknown_not_zero(tmp_path):
    (tmp_path / "openvino_model.bin").write_bytes(b"\0" * 1000)
    (tmp_path / "openvino_model.xml").write_bytes(b"\0" * 300)   # the graph: not streamed per token
    (tmp_path / "tokenizer.json").write_bytes(b"\0" * 50)
    nbytes, source = weight_bytes(SimpleNamespace(artifact_dir=tmp_path))
    assert nbytes == 1000 and source.startswith("artifact on disk (openvino_model.bin;")
    empty = tmp_path / "empty"
    empty.mkdir()
    nbytes, source = weight_bytes(SimpleNamespace(artifact_dir=empty))
    assert nbytes is None and source.startswith("unknown")
    assert weight_bytes(SimpleNamespace())[0] is None


def test_last_level_cache_is_the_largest_cache_in_sysfs(tmp_path):
    for i, size in enumerate(["32K", "512K", "32768K"]):
        (tmp_path / f"index{i}").mkdir()
        (tmp_path / f"index{i}" / "size").write_text(size + "\n")
    assert bandwidth.last_level_cache_bytes(tmp_path) == 32 * 2**20
    assert bandwidth.last_level_cache_bytes(tmp_path / "missing") is None


def test_bandwidth_counts_streams_bytes_and_says_when_the_arrays_fit_in_cache():
    s = bandwidth.measure(threads=1, array_mib=2, repeats=3)
    n = 2 * 2**20
    for name, arrays in (("copy", 2), ("triad", 3), ("read", 1)):
        k = s["kernels"][name]
        assert k["bytes_moved"] == arrays * n and len(k["seconds"]) == 3
        assert k["best_gb_s"] == pytest.approx(arrays * n / min(k["seconds"]) / 1e9)
        assert k["best_gb_s"] >= k["median_gb_s"] > 0
    llc = bandwidth.last_level_cache_bytes()
    assert s["arrays_exceed_llc"] == (None if llc is None else n >= bandwidth.LLC_FACTOR * llc)
    with pytest.raises(ValueError):
        bandwidth.measure(threads=1, array_mib=1, repeats=0)


def test_plan_refuses_what_an_engine_does_not_declare_and_always_runs_its_fp32():
    rows = roofline.plan(["torch-cpu", "onnx-cpu"], ["int8", "int4"])
    assert [(r["config"], r["precision"], r["status"]) for r in rows] == [
        ("torch-cpu", "fp32", "planned"), ("torch-cpu", "int8", "planned"), ("torch-cpu", "int4", "refused"),
        ("onnx-cpu", "fp32", "planned"), ("onnx-cpu", "int8", "planned"), ("onnx-cpu", "int4", "refused")]
    assert "does not serve precision 'int4'" in rows[2]["reason"]
    from services.inference.engines import engine_class

    declared = roofline.plan(["ov-cpu"], None)
    assert [r["precision"] for r in declared] == list(engine_class("ov").precisions)


@pytest.mark.parametrize("argv, message", [
    (["--configs", "torch-cuda"], "host memory bandwidth"),
    (["--precisions", "fp8"], "unknown precision"),
    (["--tokens", "1"], "--tokens at least 2"),
])
def test_bad_arguments_exit_2_before_measuring(argv, message, capsys):
    assert roofline.main(argv) == 2
    assert message in capsys.readouterr().err


def _request(ids, decode_s):
    return {"token_ids": ids, "completion_tokens": len(ids), "decode_s": decode_s}


def test_summary_divides_bandwidth_by_bytes_and_counts_a_lower_precision_that_differs():
    rows = [
        {"config": "torch-cpu", "precision": "fp32", "status": "ok", "weight_bytes": 800,
         "requests": [_request([1, 2, 3, 4], 0.3), _request([5, 6, 7, 8], 0.3)]},
        {"config": "torch-cpu", "precision": "int8", "status": "ok", "weight_bytes": 200,
         "requests": [_request([1, 2, 3, 4], 0.1), _request([5, 9, 9, 9], 0.1)]},
        {"config": "torch-cpu", "precision": "int4", "status": "refused", "reason": "not served"},
    ]
    roofline.summarize(rows, bytes_per_s=8000.0)
    fp32, int8, int4 = rows
    assert fp32["roofline_tokens_per_s"] == pytest.approx(10.0) and int8["roofline_tokens_per_s"] == pytest.approx(40.0)
    assert fp32["decode_tokens_per_s"] == pytest.approx(6 / 0.6) and int8["decode_tokens_per_s"] == pytest.approx(30.0)
    assert int8["share_of_roofline"] == pytest.approx(30.0 / 40.0)
    assert int8["agreement_own_fp32"] == {"reference": "torch-cpu fp32", "exact": 1, "prompts": 2, "mean_prefix": 2.5}
    assert "roofline_tokens_per_s" not in int4
    report = {"model": "m", "prompts": 2, "tokens": 4, "threads": 1, "bandwidth_bytes_per_s": 8000.0, "rows": rows,
              "bandwidth": [{"array_bytes": 2**20, "repeats": 1, "llc_bytes": 2**25, "arrays_exceed_llc": False,
                             "load_average": 0.5, "kernels": {k: {"best_gb_s": 1.0, "median_gb_s": 0.5}
                                                              for k in ("copy", "triad")}}] * 2}
    text = roofline.table(report)
    assert "| torch-cpu | int8 | ok | 0.0 | - | 30.0 | 40.0 | 75 | 1/2 | 2.5 | 1/2 | 2.5 |" in text
    assert "torch-cpu int4 refused: not served" in text and "WARNING: arrays <" in text


@pytest.mark.slow
def test_a_real_run_on_tiny_lists_every_row_and_its_roofline_is_bandwidth_over_bytes(tiny, tmp_path):
    out = tmp_path / "roofline.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/roofline.py", "--model", "tiny", "--configs", "torch-cpu,onnx-cpu",
         "--precisions", "fp32,int4", "--prompts", "2", "--tokens", "4", "--warmup", "0",
         "--array-mib", "8", "--repeats", "2", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = "| " + " | ".join(roofline.COLUMNS) + " |"
    assert header in proc.stdout
    assert "… [2/2] onnx-cpu fp32" in proc.stderr  # progress while it runs
    report = json.loads(out.read_text())
    assert report["status"] == "complete" and [s["when"] for s in report["bandwidth"]] == ["before", "after"]
    best = max(s["kernels"]["triad"]["best_gb_s"] for s in report["bandwidth"]) * 1e9
    assert report["bandwidth_bytes_per_s"] == pytest.approx(best)
    rows = {(r["config"], r["precision"]): r for r in report["rows"]}
    assert set(rows) == {("torch-cpu", "fp32"), ("torch-cpu", "int4"), ("onnx-cpu", "fp32"), ("onnx-cpu", "int4")}
    for key in (("torch-cpu", "int4"), ("onnx-cpu", "int4")):
        assert rows[key]["status"] == "refused" and "int4" in rows[key]["reason"]
        assert f"| {key[0]} | int4 | refused |" in proc.stdout
    for key in (("torch-cpu", "fp32"), ("onnx-cpu", "fp32")):
        r = rows[key]
        assert r["status"] == "ok" and len(r["requests"]) == 2
        assert all(q["completion_tokens"] == 4 for q in r["requests"])  # ignore_eos: equal work
        assert r["roofline_tokens_per_s"] == pytest.approx(report["bandwidth_bytes_per_s"] / r["weight_bytes"])
        assert r["share_of_roofline"] == pytest.approx(r["decode_tokens_per_s"] / r["roofline_tokens_per_s"])
        assert f"| {key[0]} | fp32 | ok | {r['weight_bytes'] / 1e6:.1f} |" in proc.stdout
        assert r["agreement_own_fp32"]["exact"] == 2
    # the torch model's weights are the checkpoint's (safetensors: the same tensors plus a small header),
    # less the position table, which is only looked up
    from services.models.resolve import materialize

    folder = Path(materialize(tiny).load_source)
    config = json.loads((folder / "config.json").read_text())
    positions = config["n_positions"] * config["n_embd"] * 4
    checkpoint = (folder / "model.safetensors").stat().st_size
    assert rows[("torch-cpu", "fp32")]["weight_bytes"] == pytest.approx(checkpoint - positions, rel=0.01)
    assert rows[("onnx-cpu", "fp32")]["weight_bytes_source"].startswith("artifact on disk (model.onnx;")
    assert rows[("onnx-cpu", "fp32")]["agreement_torch_fp32"]["exact"] == 2  # onnx fp32 = torch fp32 on tiny


def test_a_run_cut_short_still_prints_the_rows_it_finished_and_says_so(tmp_path, capsys):
    kernels = {k: {"best_gb_s": 2e-6, "median_gb_s": 1e-6} for k in ("copy", "triad")}  # 2000 B/s
    saved = {"status": "running", "model": "m", "prompts": 1, "tokens": 4, "threads": 1,
             "bandwidth": [{"array_bytes": 2**28, "repeats": 1, "llc_bytes": 2**25, "arrays_exceed_llc": True,
                            "load_average": 0.5, "kernels": kernels}],
             "rows": [{"config": "torch-cpu", "precision": "fp32", "status": "ok", "weight_bytes": 100,
                       "requests": [_request([1, 2, 3, 4], 0.3)]},
                      {"config": "onnx-cpu", "precision": "fp32", "status": "planned"}]}
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(saved))
    assert roofline.main(["--table", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("INCOMPLETE run (status 'running')")
    assert "| torch-cpu | fp32 | ok | 0.0 | - | 10.0 | 20.0 | 50 | 1/1 | 4.0 | 1/1 | 4.0 |" in out
    assert "| onnx-cpu | fp32 | planned |" in out
    path.write_text("{}")
    assert roofline.main(["--table", str(path)]) == 2
    assert "not a roofline report" in capsys.readouterr().err
