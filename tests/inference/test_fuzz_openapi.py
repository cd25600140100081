"""schemathesis against the live service's own /openapi.json, over real HTTP (torch-cpu, tiny).

The schemathesis CLI runs its examples, coverage and fuzzing phases on every operation, with valid and
invalid data (``--mode all``), and its own checks on every response: no 5xx, only documented status
codes, content types and headers, bodies that match the documented schemas, invalid data refused. Its
HAR report is every request it sent, so the counts below are what reached the service.
``WATTSERVE_FUZZ_EXAMPLES`` (default 50 per operation, beside the deterministic coverage phase) and
``WATTSERVE_FUZZ_SEED`` (default 1) tune it. Every generating example runs the real model, so the run
takes minutes (8 operations; 100 examples timed out at 400 s on a loaded 2-core machine); the timeout
below is a safety net against a hung service, not a speed target. (schemathesis' pytest plugin is not used: 4.32 fails under
pytest 9 with "'Function' object has no attribute '_nodeid'".)
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("WATTSERVE_FUZZ_EXAMPLES", "50"))
TIMEOUT_S = 1200
SEED = int(os.environ.get("WATTSERVE_FUZZ_SEED", "1"))
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "negative_data_rejection")
OPERATIONS = {"POST /v1/generate", "POST /v1/completions", "POST /v1/chat/completions", "GET /v1/models",
              "GET /health", "GET /ready", "GET /info", "GET /metrics"}


def test_every_operation_survives_schemathesis(start_server, tmp_path):
    if importlib.util.find_spec("schemathesis") is None:  # fail, not skip: a skipped fuzz proves nothing
        pytest.fail("schemathesis is not installed: `make venv` installs requirements-dev.txt")
    server = start_server("torch-cpu")
    probe = {"prompt": "def add(a, b):", "max_new_tokens": 8}
    before = server.client.post("/v1/generate", json=probe).json()["token_ids"]
    t0 = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
         "run", f"{server.url}/openapi.json", "--phases", "examples,coverage,fuzzing", "--mode", "all",
         "--max-examples", str(EXAMPLES), "--seed", str(SEED), "--checks", ",".join(CHECKS),
         "--continue-on-failure", "--workers", "1", "--request-timeout", "60",
         "--generation-database", "none", "--no-color", "--report", "json,har",
         "--report-json-path", str(tmp_path / "run.json"), "--report-har-path", str(tmp_path / "requests.har")],
        cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S)
    elapsed = time.monotonic() - t0
    report = json.loads((tmp_path / "run.json").read_text())
    entries = json.loads((tmp_path / "requests.har").read_text())["log"]["entries"]
    statuses = Counter(e["response"]["status"] for e in entries)
    per_operation = Counter(f"{e['request']['method']} {e['request']['url'].removeprefix(server.url)}" for e in entries)
    server_errors = [e for e in entries if e["response"]["status"] >= 500]
    print(f"\nschemathesis: {report['test_cases']['generated']} cases generated, {len(entries)} requests sent in "
          f"{elapsed:.1f} s; statuses {dict(sorted(statuses.items()))}; 5xx: {len(server_errors)}; "
          f"failures: {report['test_cases']['unique_failures']}")
    for op in sorted(OPERATIONS):
        print(f"  {op}: {per_operation[op]}")
    print(f"  undocumented methods (405 expected): {sum(n for op, n in per_operation.items() if op not in OPERATIONS)}")

    assert run.returncode == 0 and not report["failures"] and not report["errors"], run.stdout[-12000:]
    assert not server_errors, [(e["request"], e["response"]["content"]) for e in server_errors[:3]]
    assert report["complete"] and report["stop_reason"] == "completed", report
    assert report["operations"]["tested"] == report["operations"]["total"] == len(OPERATIONS)
    assert report["phases"]["coverage"]["status"] == report["phases"]["fuzzing"]["status"] == "success"
    assert OPERATIONS <= set(per_operation), per_operation
    for op in ("POST /v1/generate", "POST /v1/completions"):  # the operations with inputs really got fuzzed
        assert per_operation[op] >= min(EXAMPLES, 50), per_operation
    assert statuses[200] and statuses[422] and statuses[415], statuses
    # and the service still answers, with the same tokens as before
    after = server.client.post("/v1/generate", json=probe)
    assert after.status_code == 200 and after.json()["token_ids"] == before
    assert server.client.get("/ready").status_code == 200


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return out


def test_test_only_dependencies_stay_out_of_the_image_set():
    """requirements-dev.txt is pinned in constraints-dev.txt and in nothing the images install."""
    dev, image = pins(ROOT / "requirements-dev.txt"), pins(ROOT / "constraints.txt")
    dev_constraints = pins(ROOT / "constraints-dev.txt")
    assert "schemathesis" in dev
    assert not set(dev) & set(pins(ROOT / "requirements.txt")), "a test-only dependency is in requirements.txt"
    assert all(dev_constraints.get(n) == v for n, v in dev.items()), (dev, dev_constraints)
    assert not set(dev_constraints) & set(image), "constraints-dev.txt must only add to constraints.txt"
    makefile = (ROOT / "Makefile").read_text()
    for target in (".venv/.installed", "$(CUDA_VENV)/.installed"):   # the CPU and the CUDA environment
        rule = re.search(rf"(?ms)^{re.escape(target)}:.*?(?=^\S|\Z)", makefile)
        assert rule, f"the Makefile has no rule for {target}"
        assert "requirements-dev.txt" in rule.group(0) and "constraints-dev.txt" in rule.group(0), target
