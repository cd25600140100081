"""The bench's own exporter: which run, configuration, model, repetition and phase a watt belongs to.

Started by the bench when it joins the live stack (loadgen/stack.py), on the stack network's gateway
address, and registered as the scrape target ``job="bench"``. It is fed the progress events
(loadgen/progress.py calls every listener), so the terminal line and Prometheus say the same.

Series (every one labelled ``bench_id``):

- ``wattserve_bench_phase_info{run_id,config,model,rep,phase}`` 1 during the phase (prepare, load,
  idle_before, inference, idle_after, stop); only the current phase has a series, so
  ``... and on() wattserve_bench_phase_info{phase="inference"}`` restricts any series to inference.
  ``inference`` here spans Locust's replay; the run folder's window is the requests' span inside it.
- ``wattserve_bench_phase_start_timestamp_seconds`` / ``..._end_timestamp_seconds{run_id,phase}``
  (epoch s) of every phase of the runs so far: live while a run goes on, the run folder's own once it
  is written (then ``inference`` is the measured window, the requests' span);
- ``wattserve_bench_prompts_done`` / ``wattserve_bench_prompts_total{run_id}``;
  ``wattserve_bench_eta_seconds`` (the whole bench), ``wattserve_bench_runs{state="done|total"}``;
- after each run, from its run folder (the record): ``wattserve_bench_run_info{run_id,config,model,rep,
  status}``, ``wattserve_bench_run_time_seconds{run_id,config,model}`` (the inference window) and
  ``wattserve_bench_run_energy_joules{run_id,config,model,kind,provenance}`` (kind: global, cpu, gpu,
  wall, ...; provenance measured|estimated) — the dashboards' comparison reads these, never a second
  computation; per sensor of the run (its run.json entry): ``wattserve_bench_run_sensor_dropped_samples``,
  ``..._failed_scrapes`` and ``..._available{run_id,sensor}`` (the sensors dashboard).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Gauge, start_http_server


class BenchExporter:
    def __init__(self, bench_id: str, *, addr: str = "127.0.0.1", port: int = 0, total_runs: int = 0) -> None:
        self.bench_id = bench_id
        self.registry = r = CollectorRegistry()
        ns = "wattserve_bench"
        run_labels = ["bench_id", "run_id", "config", "model", "rep"]
        self.phase_info = Gauge(f"{ns}_phase_info", "1 during the phase of the run (only the current phase)",
                                [*run_labels, "phase"], registry=r)
        self.phase_start = Gauge(f"{ns}_phase_start_timestamp_seconds", "When the phase began (epoch s)",
                                 ["bench_id", "run_id", "phase"], registry=r)
        self.phase_end = Gauge(f"{ns}_phase_end_timestamp_seconds", "When the phase ended (epoch s)",
                               ["bench_id", "run_id", "phase"], registry=r)
        self.done = Gauge(f"{ns}_prompts_done", "Prompts answered in the run so far", ["bench_id", "run_id"],
                          registry=r)
        self.total = Gauge(f"{ns}_prompts_total", "Prompts of the run", ["bench_id", "run_id"], registry=r)
        self.eta = Gauge(f"{ns}_eta_seconds", "Seconds left in the whole bench (a lower bound early on)",
                         ["bench_id"], registry=r)
        self.runs = Gauge(f"{ns}_runs", "Runs of the bench: done and total", ["bench_id", "state"], registry=r)
        self.run_info = Gauge(f"{ns}_run_info", "A finished run (value 1), from its run folder",
                              [*run_labels, "status"], registry=r)
        self.run_time = Gauge(f"{ns}_run_time_seconds", "A finished run's inference window, from its run folder",
                              ["bench_id", "run_id", "config", "model"], registry=r)
        self.run_energy = Gauge(f"{ns}_run_energy_joules", "A finished run's inference-window energy, from its "
                                "run folder", ["bench_id", "run_id", "config", "model", "kind", "provenance"],
                                registry=r)
        sensor_labels = ["bench_id", "run_id", "sensor"]
        self.sensor_dropped = Gauge(f"{ns}_run_sensor_dropped_samples", "Bad samples the sampler dropped from a "
                                    "finished run, per sensor (its run.json entry)", sensor_labels, registry=r)
        self.sensor_failed = Gauge(f"{ns}_run_sensor_failed_scrapes", "Scrapes of a sensor that failed during a "
                                   "finished run (its run.json entry)", sensor_labels, registry=r)
        self.sensor_available = Gauge(f"{ns}_run_sensor_available", "1 when the sensor answered the whole finished "
                                      "run and never went down (its run.json entry)", sensor_labels, registry=r)
        self.runs.labels(bench_id, "total").set(total_runs)
        self.runs.labels(bench_id, "done").set(0)
        self.server, self.thread = start_http_server(port, addr=addr, registry=r)
        self.address = f"{addr}:{self.server.server_port}"
        self.run: dict | None = None
        self.phase: str | None = None
        self.finished = 0

    # -- progress events (loadgen/progress.py)
    def start_run(self, run_id: str, config: str, model: str, rep: int, prompts: int) -> None:
        self._close_phase()
        self.run = {"bench_id": self.bench_id, "run_id": run_id, "config": config, "model": model, "rep": str(rep)}
        self.total.labels(self.bench_id, run_id).set(prompts)
        self.done.labels(self.bench_id, run_id).set(0)

    def set_phase(self, phase: str) -> None:
        if self.run is None:
            return
        self._close_phase()
        self.phase = phase
        self.phase_info.labels(**self.run, phase=phase).set(1)
        self.phase_start.labels(self.bench_id, self.run["run_id"], phase).set(time.time())

    def requests(self, done: int) -> None:
        if self.run is not None:
            self.done.labels(self.bench_id, self.run["run_id"]).set(done)

    def set_eta(self, seconds: float) -> None:
        self.eta.labels(self.bench_id).set(seconds)

    def end_run(self, manifest: dict | None = None) -> None:
        """The run is written: its phase ends, and its record's figures (run.json's summary) are exposed."""
        self._close_phase()
        self.finished += 1
        self.runs.labels(self.bench_id, "done").set(self.finished)
        if self.run is None or manifest is None:
            return
        run, summary = self.run, manifest.get("summary") or {}
        for phase, edges in (manifest.get("phases") or {}).items():  # the record's edges replace the live ones
            if isinstance(edges, dict) and {"start", "end"} <= set(edges):
                self.phase_start.labels(self.bench_id, run["run_id"], phase).set(edges["start"])
                self.phase_end.labels(self.bench_id, run["run_id"], phase).set(edges["end"])
        self.run_info.labels(**run, status=manifest.get("status") or "unknown").set(1)
        names = (self.bench_id, run["run_id"], run["config"], run["model"])
        if summary.get("time_s") is not None:
            self.run_time.labels(*names).set(summary["time_s"])
        for kind, joules, estimated in record_energies(summary.get("energy") or {}):
            self.run_energy.labels(*names, kind, "estimated" if estimated else "measured").set(joules)
        for sensor in manifest.get("sensors") or []:
            if not isinstance(sensor, dict) or not sensor.get("name"):
                continue
            keys = (self.bench_id, run["run_id"], str(sensor["name"]))
            self.sensor_dropped.labels(*keys).set(sensor.get("dropped_samples") or 0)
            self.sensor_failed.labels(*keys).set(sensor.get("failed_scrapes") or 0)
            self.sensor_available.labels(*keys).set(1 if sensor.get("available") else 0)
        self.run = None

    def _close_phase(self) -> None:
        if self.run is not None and self.phase is not None:
            self.phase_end.labels(self.bench_id, self.run["run_id"], self.phase).set(time.time())
            self.phase_info.remove(*self.run.values(), self.phase)
        self.phase = None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def record_energies(energy: dict) -> list[tuple[str, float, bool]]:
    """(kind, joules, estimated) of a run's summary energy (analysis/quantities.py run_energy's keys):
    ``global`` and every domain that has a value."""
    out = []
    if isinstance(energy.get("energy_global_j"), (int, float)):
        out.append(("global", float(energy["energy_global_j"]), bool(energy.get("energy_global_estimated"))))
    for key, value in energy.items():
        dom = key[len("energy_"):-len("_j")] if key.startswith("energy_") and key.endswith("_j") else None
        if dom and dom not in ("global", "per_request", "per_token") and isinstance(value, (int, float)):
            out.append((dom, float(value), bool(energy.get(f"energy_{dom}_estimated"))))
    return out
