"""Monitoring across nodes: the stack's real Prometheus (its own compose/prometheus.yml) scrapes a Slurm
job's exporters from the file_sd file the study coordinator keeps (loadgen/study/targets.py), with the
``node`` label the dashboards select on, and drops them when the job ends."""

from __future__ import annotations

import json
import socket
import urllib.parse
from pathlib import Path

from tests.docker.conftest import ROOT, docker, http_json, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_prometheus_scrapes_a_jobs_exporters_by_file_sd_labelled_node_and_drops_them_when_it_ends(
        docker_engine, cpu_images, tmp_path):
    from loadgen.local_exporters import start_local_exporters
    from loadgen.sampling import SensorChoice
    from loadgen.study.targets import NODE_LABEL, FileSD, job_groups, node_address

    slurm_dir = tmp_path / "study" / "slurm"
    stack_targets = tmp_path / "targets"
    stack_targets.mkdir(mode=0o755)
    stack_targets.chmod(0o755)  # Prometheus runs as nobody in its container
    # a job's exporters as job.py starts them: on every address
    exporters, stop = start_local_exporters(None, choice=SensorChoice.parse(cpu="estimate", gpu="none", wall="none"),
                                            addr="0.0.0.0")
    port = free_port()
    name = f"wattserve-test-filesd-{port}"
    try:
        assert set(exporters) == {"host", "estimate"}
        labels = {NODE_LABEL: "node-a", "study": "s", "slurm_job": "42", "run_id": "20261207T000000Z-torch-cpu-tiny-r1"}
        (slurm_dir / "targets").mkdir(parents=True)
        (slurm_dir / "targets" / "42.json").write_text(json.dumps(job_groups(exporters, node_address(), labels)))
        (slurm_dir / "targets" / "7.json").write_text(json.dumps(job_groups(exporters, "192.0.2.99", {
            **labels, NODE_LABEL: "gone", "slurm_job": "7"})))  # a job that ended without removing its file
        sd = FileSD(slurm_dir, [stack_targets / "study-s.json"])
        sd.update({"42"})
        docker("run", "-d", "--rm", "--name", name, "--network", "host",
               "-v", f"{ROOT / 'compose' / 'prometheus.yml'}:/etc/prometheus/prometheus.yml:ro",
               "-v", f"{stack_targets}:/etc/prometheus/targets:ro", "wattserve-prometheus",
               "--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
               f"--web.listen-address=127.0.0.1:{port}")
        api = f"http://127.0.0.1:{port}/api/v1"

        def up_by_node():
            q = urllib.parse.quote('up{node!=""}')
            status, body = http_json(f"{api}/query?query={q}", timeout=5)
            res = body["data"]["result"] if status == 200 else []
            up = {(r["metric"]["node"], r["metric"]["job"]): r for r in res if r["value"][1] == "1"}
            # Prometheus scrapes each target on its own schedule: wait for both, not the first one up
            return up if {("node-a", "host"), ("node-a", "estimate")} <= set(up) else None

        got = wait_until(up_by_node, 60, what="the job's exporters up in Prometheus")
        assert set(got) == {("node-a", "host"), ("node-a", "estimate")}, got
        for r in got.values():
            assert r["metric"]["run_id"] == labels["run_id"] and r["metric"]["slurm_job"] == "42"
            assert r["metric"]["study"] == "s" and r["metric"]["instance"] == f"node-a:{r['metric']['job']}"
        q = urllib.parse.quote('wattserve_power_watts{node="node-a"}')
        assert wait_until(lambda: http_json(f"{api}/query?query={q}", timeout=5)[1]["data"]["result"], 30,
                          what="the estimate exporter's power under node=node-a")

        sd.update(set())  # the job ended: its exporters leave Prometheus' targets

        def gone():
            status, body = http_json(f"{api}/targets", timeout=5)
            return status == 200 and not [t for t in body["data"]["activeTargets"] if t["labels"].get("node")]

        wait_until(gone, 30, what="the ended job's targets dropped")
        sd.close()
        assert not (stack_targets / "study-s.json").exists() and json.loads((slurm_dir / "file_sd.json").read_text()) == []
    finally:
        docker("rm", "-f", name, check=False)
        stop()
