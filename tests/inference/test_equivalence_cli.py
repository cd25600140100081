"""`make equivalence` with a precision: a lower precision is compared with torch fp32 and with its own
configuration at fp32, and its agreement is shown without failing the exit status."""

from services.inference import equivalence


def test_a_lower_precision_is_compared_with_both_references(tiny, capsys):
    status = equivalence.main(["--model", "tiny", "--configs", "onnx-cpu", "--precision", "int8", "--limit", "3",
                               "--threads", "1", "--max-length", "40"])
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("onnx-cpu@int8 ")]
    assert [r[1] for r in rows] == ["torch-cpu", "onnx-cpu"]
    assert all(r[2].endswith("/3") for r in rows) and "agreement shown, not judged" in out
    assert status == 0  # whatever int8 changed: only fp32 is judged


def test_a_refused_precision_is_exit_2(capsys):
    assert equivalence.main(["--configs", "jit-cpu", "--precision", "int8"]) == 2
    assert "jit-cpu@int8: engine 'jit' does not serve precision 'int8'" in capsys.readouterr().err
