"""Scrape exporters into a run folder's ``series.csv`` (the exporters this machine supports are started
by loadgen/local_exporters.py).

    from loadgen.local_exporters import start_local_exporters
    from loadgen.sampler import Sampler

    targets, stop_exporters = start_local_exporters(service_pid, log_dir=run_dir / "exporters")
    sampler = Sampler(targets, interval_s=0.5)
    sampler.start(run_dir)            # series.csv grows while the run goes on
    ...                               # load, idle before, inference, idle after
    manifest["sensors"] = sampler.stop()
    stop_exporters()

``series.csv`` rows (docs/run-folder.md): ``t, sensor, metric, labels, value`` with t = epoch seconds
at the scrape (midpoint of the HTTP request), sensor = the target's name, metric = the sample name as
exposed (counters keep ``_total``; ``_created`` samples are dropped), labels = JSON, sorted keys. Each
scrape adds one ``up`` row (1 = the target answered, 0 = it did not) so gaps are visible in the data.

Bad data is dropped, counted and marked, never written as a value (:meth:`Sampler._check`):

- a body that is not the exposition format (or holds no sample) is a failed scrape (``up 0``), kept whole
  out of series.csv;
- a NaN or infinite sample is dropped;
- an energy counter (``wattserve_energy_joules_total``; dcgm-exporter's total energy, mJ) that jumps by
  more than ``max_device_watts`` (default 10 kW per series, i.e. per device) x the time since its value
  last changed (at least one interval; sensor time where the exporter gives it) is dropped, and so is a
  first value above that bound x the exporter's uptime;
- a counter that goes backwards is dropped, unless it is a restart: the exporter's
  ``wattserve_exporter_start_time_seconds`` changed (every wattserve counter starts near 0 at its
  exporter's start), or, for an exporter that does not say when it started (dcgm-exporter), once
  REBASE_SAMPLES (3) samples in a row go on plausibly from the lower value (those before are dropped: a
  one-sample glitch, to 0 or anywhere else, is never taken for a restart).

A dropped value does not move the reference the next sample is judged against. Each dropped sample
writes a ``dropped`` row instead (labels: the sample's own plus ``metric``, ``reason`` and the rejected
``value`` as text; value 1), so the analysis marks every window it falls into incomplete; the sensor
descriptor carries ``dropped_samples`` and ``dropped_reason``, and the run is flagged.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import math
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from loadgen.runfolder import SeriesWriter
from services.exporters.common import redact_url, url_secrets

log = logging.getLogger("wattserve.sampler")
MAX_DEVICE_WATTS = 10_000.0  # no one device (CPU package, GPU, outlet) draws more: a faster rise is garbage
# energy counters checked for drops and jumps -> their scale to joules
ENERGY_COUNTERS = {"wattserve_energy_joules_total": 1.0, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": 1e-3,
                   "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total": 1e-3}
START_TIME = "wattserve_exporter_start_time_seconds"
REBASE_SAMPLES = 3  # without a start time: a drop is a restart once this many samples go on from the new value
SAMPLE_TS = "wattserve_sensor_last_sample_timestamp_seconds"


@dataclass
class _Target:
    name: str
    url: str
    scrapes: int = 0
    failed: int = 0
    ok_once: bool = False
    failed_after_ok: int = 0
    last_error: str | None = None
    last_error_t: float | None = None
    last_failed: bool = False
    sources: set[str] = field(default_factory=set)
    estimated: bool = False
    down_scrapes: int = 0          # scrapes where a sensor said wattserve_sensor_up 0 (after it was up)
    sensor_up_once: bool = False
    down_message: str | None = None
    dcgm: bool = False             # NVIDIA dcgm-exporter (no wattserve_sensor_up of its own)
    dropped: Counter = field(default_factory=Counter)  # reason -> samples dropped as bad data
    dropped_example: str | None = None
    start_time: float | None = None  # the exporter's wattserve_exporter_start_time_seconds
    counters: dict = field(default_factory=dict)  # (name, labels) -> (t its value changed, J, scrape t)
    rebase: dict = field(default_factory=dict)    # (name, labels) -> [(t, J)] gone backwards, in a row
    done: int = 0                  # scrapes finished (mark() waits for one that began after it)
    busy: bool = False             # a scrape is in flight
    kick: threading.Event = field(default_factory=threading.Event)  # scrape now (mark)
    pending: list = field(default_factory=list)  # (t, body, error) fetched while deferred, not yet processed


class _Scraper:
    """GET one /metrics URL over a kept-alive connection with the standard library's http.client: a
    third of httpx's CPU per scrape, and the sampler's CPU lands in the measured window. Exporters are
    reached directly (no proxy); user:password in the URL becomes basic auth; a failed request drops
    the connection, and the next one reconnects."""

    def __init__(self, url: str, timeout_s: float) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {redact_url(url)}")
        self.host, self.port, self.https = u.hostname, u.port, u.scheme == "https"
        self.path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.headers = {"Accept-Encoding": "identity", "Connection": "keep-alive"}
        if u.username is not None:
            cred = f"{urllib.parse.unquote(u.username)}:{urllib.parse.unquote(u.password or '')}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
        self.timeout_s = timeout_s
        self.conn: http.client.HTTPConnection | None = None

    def get(self) -> tuple[int, str]:
        if self.conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self.conn = cls(self.host, self.port, timeout=self.timeout_s)
        try:
            self.conn.request("GET", self.path, headers=self.headers)
            resp = self.conn.getresponse()
            body = resp.read()
        except Exception:
            self.close()
            raise
        if resp.will_close:
            self.close()
        charset = resp.headers.get_content_charset() or "utf-8"
        return resp.status, body.decode(charset, errors="replace")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> "_Scraper":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Sampler:
    """Scrapes every target (name -> /metrics URL) every ``interval_s`` seconds, each in its own thread
    (a slow target delays only itself; each request waits at most ``timeout_s``), and appends the
    samples to ``run_dir/series.csv``, flushed about every ``flush_s`` seconds."""

    def __init__(self, targets: dict[str, str], interval_s: float = 0.5, timeout_s: float | None = None,
                 flush_s: float = 1.0, max_device_watts: float = MAX_DEVICE_WATTS) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if not max_device_watts > 0:
            raise ValueError("max_device_watts must be > 0")
        self.max_device_watts = float(max_device_watts)
        self.targets = {name: _Target(name, url) for name, url in targets.items()}
        # a target may carry user:password in its URL: scraped with it, recorded and logged without it
        self._secrets = sorted({s for url in targets.values() for s in url_secrets(url)}, key=len, reverse=True)
        self.interval_s = interval_s
        # generous: a loaded host (inference on every core) may answer late; a late answer only delays
        # that target's next scrape (skipped ticks), never the others
        self.timeout_s = timeout_s if timeout_s is not None else min(5.0, max(1.0, 2 * interval_s))
        self.flush_s = flush_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._done = threading.Condition()  # a target finished a scrape (for mark())
        self._deferred = threading.Event()  # parse later (defer())
        self._threads: list[threading.Thread] = []
        self._writer: SeriesWriter | None = None
        self.path: Path | None = None

    def start(self, run_dir: Path) -> None:
        if self._threads:
            raise RuntimeError("sampler already started")
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self._writer = SeriesWriter(run_dir, self.flush_s)
        self.path = self._writer.path
        self._stop.clear()
        for tgt in self.targets.values():
            th = threading.Thread(target=self._loop, args=(tgt,), name=f"sampler-{tgt.name}", daemon=True)
            th.start()
            self._threads.append(th)

    def stop(self) -> list[dict]:
        """Stop scraping, flush and close series.csv; the sensors' descriptors for run.json."""
        self._stop.set()
        with self._done:
            for t in self.targets.values():
                t.kick.set()
            self._done.notify_all()
        for th in self._threads:
            th.join(self.timeout_s + 5)
        self._threads = []
        self._deferred.clear()
        for tgt in self.targets.values():  # a backlog left by a window that ended with the run
            while tgt.pending:
                self._process(tgt, *tgt.pending.pop(0))
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        return [self._descriptor(t) for t in self.targets.values()]

    # -- scraping
    def mark(self, timeout_s: float | None = None) -> bool:
        """Scrape every target now, on top of the periodic grid, and return once each has a scrape that
        began after this call (True) or ``timeout_s`` passed (False). The protocol marks every phase
        boundary so that a window's edges need no interpolation across a whole sampling interval."""
        if not self._threads:
            return False
        with self._done:
            need = {t.name: t.done + (2 if t.busy else 1) for t in self.targets.values()}
            for t in self.targets.values():
                t.kick.set()
            return self._done.wait_for(lambda: all(t.done >= need[t.name] for t in self.targets.values())
                                       or self._stop.is_set(), timeout_s if timeout_s is not None else self.timeout_s + 1)

    def _loop(self, tgt: _Target) -> None:
        with _Scraper(tgt.url, self.timeout_s) as client:  # one keep-alive connection per target
            next_t = time.monotonic()
            while not self._stop.is_set():
                with self._done:
                    tgt.busy = True
                self._scrape(client, tgt)
                with self._done:
                    tgt.busy, tgt.done = False, tgt.done + 1
                    self._done.notify_all()
                now = time.monotonic()
                if next_t <= now:  # a periodic tick (not a mark): the next one on the grid
                    next_t += self.interval_s
                    if next_t < now:  # fell behind (slow target): skip the missed ticks
                        next_t = now + self.interval_s
                tgt.kick.wait(next_t - now)  # a mark() wakes it early
                tgt.kick.clear()

    def _scrape(self, client: "_Scraper", tgt: _Target) -> None:
        t0 = time.time()
        error = text = None
        try:
            status, text = client.get()
            if status != 200:
                error, text = f"HTTP {status}", None
        except Exception as e:
            error = self._scrub(f"{type(e).__name__}: {e}")
        t = (t0 + time.time()) / 2
        if self._deferred.is_set():  # inside the measured window: parse later, off the window
            tgt.pending.append((t, text, error))
            return
        while tgt.pending:  # the window's backlog first, in order, in this target's own thread
            self._process(tgt, *tgt.pending.pop(0))
        self._process(tgt, t, text, error)

    def defer(self, on: bool) -> None:
        """While on, scrapes are fetched but not parsed, checked or written: the bodies wait in memory
        and are processed, in order, by the next scrape after it is turned off (or by ``stop``). The
        protocol turns it on for the inference window, whose CPU the harness should not share; a run
        that crashes inside the window loses those samples (it is failed anyway)."""
        (self._deferred.set if on else self._deferred.clear)()

    def _process(self, tgt: _Target, t: float, text: str | None, error: str | None) -> None:
        rows: list[tuple] = []
        if text is not None:
            try:
                samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]
                if not samples:
                    raise ValueError("no sample in the answer")
            except Exception as e:  # not the exposition format: nothing of it is kept
                error = self._scrub(f"unparsable /metrics: {type(e).__name__}: {e}")[:300]
                rows = [self._drop(tgt, t, "unparsable /metrics", "(whole scrape)", {}, error)]
            else:
                rows = self._rows(tgt, t, samples)
        tgt.scrapes += 1
        tgt.last_failed = error is not None
        if error is None:
            tgt.ok_once = True
        else:
            tgt.failed += 1
            tgt.failed_after_ok += tgt.ok_once
            if tgt.last_error is None or tgt.failed_after_ok == 1:
                log.warning("sampler: %s (%s) did not answer: %s", tgt.name, redact_url(tgt.url), error)
            tgt.last_error, tgt.last_error_t = error, t
        rows.append((t, tgt.name, "up", "{}", 0.0 if error else 1.0))
        self._write(rows)

    def _drop(self, tgt: _Target, t: float, reason: str, name: str, labels: dict, value) -> tuple:
        """Count a bad sample and return its ``dropped`` row (the value only as text, in a label)."""
        tgt.dropped[reason] += 1
        example = f"{name}{json.dumps(labels, sort_keys=True) if labels else ''} = {value} at t={t:.3f}"
        if tgt.dropped_example is None:
            log.warning("sampler: %s (%s): dropped a bad sample (%s): %s", tgt.name, redact_url(tgt.url), reason,
                        example)
        tgt.dropped_example = f"{reason}: {example}"
        return (t, tgt.name, "dropped", json.dumps({**labels, "metric": name, "reason": reason,
                                                     "value": str(value)}, sort_keys=True), 1.0)

    def _check(self, tgt: _Target, t: float, t_sensor: float, s) -> str | None:
        """Why sample ``s`` is bad data, or None. Energy counters keep (time their value last changed,
        joules, scrape time) per series; a dropped value does not move that reference."""
        if not math.isfinite(s.value):
            return "non-finite value"
        scale = ENERGY_COUNTERS.get(s.name)
        if scale is None:
            return None
        key = (s.name, tuple(sorted(s.labels.items())))
        j = s.value * scale
        ref = tgt.counters.get(key)
        floor = max(self.interval_s, 0.01)
        if ref is None:
            if tgt.start_time is not None and j > self.max_device_watts * (max(t_sensor - tgt.start_time, 0) + floor):
                return (f"implausible counter: {j:.6g} J since the exporter started "
                        f"{t_sensor - tgt.start_time:.3g} s before (> {self.max_device_watts:g} W)")
        else:
            t_ref, j_ref, _ = ref
            rate = lambda j1, t1, j0, t0: (j1 - j0) / max(t1 - t0, floor)  # noqa: E731
            if j < j_ref:
                if tgt.start_time is not None:
                    return f"counter went backwards from {j_ref:.6g} J to {j:.6g} J without an exporter restart"
                # no start time to tell a restart (dcgm-exporter): one only once the counter goes on from there
                run = tgt.rebase.setdefault(key, [])
                if run and (j < run[-1][1] or rate(j, t_sensor, run[-1][1], run[-1][0]) > self.max_device_watts):
                    run.clear()
                run.append((t_sensor, j))
                if len(run) < REBASE_SAMPLES:
                    return (f"counter went backwards from {j_ref:.6g} J to {j:.6g} J (taken as a restart once "
                            f"{REBASE_SAMPLES} samples go on from there)")
            elif j > j_ref and rate(j, t_sensor, j_ref, t_ref) > self.max_device_watts:
                return (f"counter jumped by {j - j_ref:.6g} J: {rate(j, t_sensor, j_ref, t_ref):.3g} W > "
                        f"{self.max_device_watts:g} W")
            tgt.rebase.pop(key, None)
        if ref is None or j != ref[1]:
            tgt.counters[key] = (t_sensor, j, t)
        else:
            tgt.counters[key] = (ref[0], j, t)
        return None

    def _rows(self, tgt: _Target, t: float, samples: list) -> list[tuple]:
        rows = []
        down: list[str] = []
        starts = [s.value for s in samples if s.name == START_TIME and math.isfinite(s.value)]
        if starts:
            if tgt.start_time is not None and max(starts) != tgt.start_time:
                tgt.counters.clear()  # the exporter restarted: its counters start again near 0
                tgt.rebase.clear()
            tgt.start_time = max(starts)
        stamps = [s.value for s in samples if s.name == SAMPLE_TS and math.isfinite(s.value)]
        t_sensor = max(stamps) if stamps else t  # where the analysis places the values (its sensor clock)
        for s in samples:
            if s.name.endswith("_created"):
                continue
            labels = s.labels
            bad = self._check(tgt, t, t_sensor, s)
            if bad is not None:
                rows.append(self._drop(tgt, t, bad, s.name, dict(labels), s.value))
                continue
            if s.name == "wattserve_sensor_up":
                if labels.get("source"):
                    tgt.sources.add(labels["source"])
                if s.value == 1:
                    tgt.sensor_up_once = True
                else:
                    down.append(labels.get("sensor", "?"))
            elif s.name == "wattserve_sensor_info" and labels.get("message"):
                tgt.down_message = labels["message"]
            elif s.name == "wattserve_energy_joules_total" and labels.get("estimated") == "true":
                tgt.estimated = True
            elif s.name.startswith("DCGM_FI_"):
                tgt.dcgm = True
            rows.append((t, tgt.name, s.name, json.dumps(labels, sort_keys=True), s.value))
        if down and tgt.sensor_up_once:
            tgt.down_scrapes += 1
        return rows

    def _write(self, rows: list[tuple]) -> None:
        with self._lock:
            if self._writer is None:
                return
            self._writer.write(rows)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @staticmethod
    def _descriptor(t: _Target) -> dict:
        """run.json sensor entry. available = answered every scrape and its sensor never went down once
        it had come up (a sensor still warming up at the first scrape is not a failure; one that never
        came up is). ``dropped_samples``: bad samples dropped (counted by reason in ``dropped_reason``,
        with the last one); the run is flagged for them (loadgen/protocol.py run_flags)."""
        available = t.scrapes > 0 and t.failed_after_ok == 0 and t.ok_once and t.down_scrapes == 0
        if t.sources and not t.sensor_up_once:
            available = False
        error = None
        if not t.ok_once:
            error = f"never answered: {t.last_error}"
        elif t.failed_after_ok:
            what = "stopped answering" if t.last_failed else "missed scrapes"
            error = (f"{what}: {t.failed_after_ok} of {t.scrapes} scrapes failed, the last at "
                     f"t={t.last_error_t:.3f}: {t.last_error}")
        elif t.sources and not t.sensor_up_once:
            error = f"sensor never up: {t.down_message}"
        elif t.down_scrapes:
            error = f"sensor down in {t.down_scrapes} of {t.scrapes} scrapes: {t.down_message}"
        source = ",".join(sorted(t.sources)) or ("dcgm" if t.dcgm else None)
        dropped = sum(t.dropped.values())
        reason = None
        if dropped:
            reason = ", ".join(f"{n} {why}" for why, n in t.dropped.most_common()) + f"; last: {t.dropped_example}"
        return {"name": t.name, "url": redact_url(t.url), "source": source,
                "estimated": t.estimated, "available": available, "error": error,
                "scrapes": t.scrapes, "failed_scrapes": t.failed,
                "dropped_samples": dropped, "dropped_reason": reason}
