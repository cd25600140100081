"""What every wattserve exporter shares: the metric families of the contract, the collector base
(availability, scrape duration and errors), counter helpers (wraparound, power integration, rate) and
the command-line / HTTP plumbing.

An exporter is a prometheus_client custom collector: :meth:`Exporter.read` yields the families read
at scrape time (or from state a poll thread keeps). A sensor that cannot be read raises
:class:`SensorUnavailable` with a message saying why and how to fix it: the scrape then carries
``wattserve_sensor_up 0`` and that message, and no energy series at all (never 0 J).
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Callable, Iterable, Iterator, Sequence
from urllib.parse import unquote, urlsplit, urlunsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

NAMESPACE = "wattserve"
ENERGY_LABELS = ("domain", "device", "source", "estimated", "method")
POWER_LABELS = ("domain", "device", "source", "estimated")

log = logging.getLogger("wattserve.exporters")


class SensorUnavailable(RuntimeError):
    """The sensor cannot be read now; the message says why and how to grant access or install it."""


def redact_url(url: str) -> str:
    """The URL without any user:password part, for logs and run records (string surgery: a malformed
    port must not raise and print the URL in a traceback)."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, parts.query, parts.fragment))
    return url


def url_secrets(url: str) -> list[str]:
    """The password in a URL, as written and decoded: what must never reach a log line or a file."""
    password = urlsplit(url).netloc.rpartition("@")[0].partition(":")[2]
    return [s for s in {password, unquote(password)} if s]


def flag(value: bool) -> str:
    """Label value of a boolean (``"true"`` / ``"false"``)."""
    return "true" if value else "false"


# ------------------------------------------------------------------ metric families of the contract

def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{NAMESPACE}_{name}", doc, labels=list(labels))


def counter(name: str, doc: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
    """A counter family; ``name`` without ``_total`` (the exposition adds it)."""
    return CounterMetricFamily(f"{NAMESPACE}_{name}", doc, labels=list(labels))


def energy_family(extra: Sequence[str] = ()) -> CounterMetricFamily:
    """``extra``: labels after the contract's (the GPU exporters add ``uuid``)."""
    return counter("energy_joules",
                   "Energy since this exporter started measuring, in joules, wraparound handled. "
                   "Zones overlap (package includes core): CPU energy = sum over domain=\"cpu\" only. "
                   "method=counter: a hardware/driver energy counter; method=power-integral: measured "
                   "(or, with estimated=true, modelled) power integrated by the exporter.",
                   (*ENERGY_LABELS, *extra))


def power_family(extra: Sequence[str] = ()) -> GaugeMetricFamily:
    return gauge("power_watts", "Power in watts (mean over the exporter's last interval where derived "
                 "from an energy counter)", (*POWER_LABELS, *extra))


# ------------------------------------------------------------------ counters

class WraparoundTracker:
    """A raw energy counter that wraps at ``range_`` made monotonic (zeus' RaplWraparoundTracker):
    cumulative = raw + wraps x range. Poll it more often than the counter can wrap (range / max power).

    ``range_=None`` infers the range at each wrap as the smallest power of two above the last value
    before the drop: right for RAPL MSR counters printed in joules (32 bits x 2^-ESU J = 2^(32-ESU) J),
    which is what EnergiBridge prints.
    """

    def __init__(self, range_: float | None = None) -> None:
        self.range = range_
        self.last: float | None = None
        self.offset = 0.0
        self.wraps = 0

    def update(self, raw: float) -> float:
        if self.last is not None and raw < self.last:
            self.offset += self.range if self.range else 2.0 ** math.ceil(math.log2(max(self.last, 1.0)))
            self.wraps += 1
        self.last = raw
        return raw + self.offset


class PowerIntegrator:
    """Trapezoidal integral of sampled power (W) into joules. A gap longer than ``max_gap_s`` is not
    bridged (nothing is added for it; ``gaps`` counts them): the sensor was down then, and the analysis
    sees that in the sampled availability."""

    def __init__(self, max_gap_s: float) -> None:
        self.max_gap_s = max_gap_s
        self.joules = 0.0
        self.last: tuple[float, float] | None = None
        self.gaps = 0

    def add(self, t: float, watts: float) -> None:
        if self.last is not None:
            t0, w0 = self.last
            dt = t - t0
            if dt <= 0:
                return
            if dt <= self.max_gap_s:
                self.joules += 0.5 * (w0 + watts) * dt
            else:
                self.gaps += 1
        self.last = (t, watts)


class RateWindow:
    """Rate of a cumulative value over roughly the last ``window_s`` seconds (power from energy)."""

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, float]] = deque()

    def add(self, t: float, value: float) -> None:
        if self.samples and t <= self.samples[-1][0]:
            return
        self.samples.append((t, value))
        while len(self.samples) > 2 and self.samples[1][0] <= t - self.window_s:
            self.samples.popleft()

    def rate(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, v0), (t1, v1) = self.samples[0], self.samples[-1]
        return (v1 - v0) / (t1 - t0)


def cpu_busy_total() -> tuple[float, float]:
    """System-wide (busy, total) CPU seconds from psutil: busy = user+nice+system+irq+softirq; total adds
    idle, iowait and steal (guest time is already inside user on Linux, so it is not added again)."""
    import psutil

    ct = psutil.cpu_times()
    busy = sum(getattr(ct, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))
    return busy, busy + sum(getattr(ct, f, 0.0) for f in ("idle", "iowait", "steal"))


# ------------------------------------------------------------------ the collector base

class Exporter:
    """Base collector: subclasses set ``sensor`` (exporter name) and ``source`` and implement
    :meth:`read`. Scrapes are serialised by ``self.lock`` (an RLock poll threads share)."""

    sensor = "base"
    source = "none"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.scrape_errors = 0
        self.last_sample_time: float | None = None  # epoch s of the newest underlying sample, if polled
        self.start_time = time.time()  # counters start near 0 here: a new value = a restart (the sampler)
        self._state: tuple[int, str] | None = None
        self._warned: set[str] = set()

    def read(self) -> Iterable[Metric]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop threads and child processes."""

    def error(self, what: str, exc: BaseException) -> None:
        """A read that failed: its family is dropped (never 0) and the scrape-error counter rises."""
        self.scrape_errors += 1
        if what not in self._warned:
            self._warned.add(what)
            log.warning("%s: %s failed: %s: %s", self.sensor, what, type(exc).__name__, exc)

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            t0 = time.perf_counter()
            try:
                families, up, message = list(self.read()), 1, ""
            except SensorUnavailable as e:
                families, up, message = [], 0, str(e)
            except Exception as e:  # a bug or an unexpected device state: count it, report down
                self.scrape_errors += 1
                families, up, message = [], 0, f"{type(e).__name__}: {e}"
                log.exception("%s: scrape failed", self.sensor)
            if self._state != (up, message):
                (log.info if up else log.error)("%s: %s", self.sensor, "available" if up else message)
                self._state = (up, message)
            duration = time.perf_counter() - t0
            last_sample = self.last_sample_time
        yield from families
        keys = [self.sensor, self.source]
        g = gauge("sensor_up", "1 when the sensor could be read at this scrape, 0 when not (then no "
                  "energy series is exported; see wattserve_sensor_info for why)", ["sensor", "source"])
        g.add_metric(keys, up)
        yield g
        g = gauge("sensor_info", "Why the sensor is down (message label); empty message when up",
                  ["sensor", "source", "message"])
        g.add_metric(keys + [message], 1)
        yield g
        if up and last_sample is not None:
            g = gauge("sensor_last_sample_timestamp_seconds",
                      "Epoch time of the newest underlying sample (polled sensors)", ["sensor", "source"])
            g.add_metric(keys, last_sample)
            yield g
        g = gauge("exporter_start_time_seconds", "Epoch time this exporter started: its counters start near 0 "
                  "then, so a new value means a restart (a counter drop is then legitimate)", ["sensor"])
        g.add_metric([self.sensor], self.start_time)
        yield g
        g = gauge("exporter_scrape_duration_seconds", "Time this scrape took to read the sensor",
                  ["sensor"])
        g.add_metric([self.sensor], duration)
        yield g
        c = counter("exporter_scrape_errors", "Reads that failed (their series were dropped)", ["sensor"])
        c.add_metric([self.sensor], self.scrape_errors)
        yield c


class Poller:
    """Calls ``fn`` every ``interval_s`` seconds in a daemon thread (first call at once); a missed tick
    is skipped, not caught up."""

    def __init__(self, fn: Callable[[], None], interval_s: float, name: str) -> None:
        self.fn, self.interval_s = fn, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "Poller":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                self.fn()
            except Exception:
                log.exception("poll %s failed", self._thread.name)
            next_t += self.interval_s
            now = time.monotonic()
            if next_t < now:
                next_t = now + self.interval_s
            self._stop.wait(next_t - now)


def die_with_parent() -> None:
    """``preexec_fn`` for child processes: SIGTERM them when the parent dies (Linux prctl), so a killed
    exporter never leaves an orphaned EnergiBridge / nvidia-smi behind. Best effort elsewhere."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class LineProcess:
    """Runs a long-lived command (EnergiBridge, nvidia-smi), hands every output line (stdout and stderr
    merged) to ``on_line``, and restarts it ``restart_delay_s`` after it exits. ``on_start`` is called
    before each start, ``on_exit(code, tail)`` after each exit with the last output lines."""

    def __init__(self, argv: list[str], *, on_line: Callable[[str], None], on_start: Callable[[], None],
                 on_exit: Callable[[int, str], None], restart_delay_s: float, name: str) -> None:
        self.argv, self.on_line, self.on_start, self.on_exit = argv, on_line, on_start, on_exit
        self.restart_delay_s = restart_delay_s
        self.proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "LineProcess":
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.on_start()
            tail: deque[str] = deque(maxlen=8)
            try:
                self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, text=True, bufsize=1,
                                             start_new_session=True,  # stop() ends its children too
                                             preexec_fn=die_with_parent if sys.platform == "linux" else None)
            except OSError as e:
                self.on_exit(-1, f"{type(e).__name__}: {e}")
            else:
                assert self.proc.stdout is not None
                for line in self.proc.stdout:
                    line = line.rstrip("\r\n")
                    if line:
                        tail.append(line)
                        self.on_line(line)
                code = self.proc.wait()
                if not self._stop.is_set():
                    self.on_exit(code, " | ".join(tail))
            self._stop.wait(self.restart_delay_s)

    def stop(self) -> None:
        self._stop.set()
        p = self.proc
        if p is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):  # the process and what it started (its group)
                try:
                    os.killpg(p.pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                try:
                    p.wait(5)
                    break
                except subprocess.TimeoutExpired:
                    continue
            try:
                os.killpg(p.pid, signal.SIGKILL)  # a child that outlived its leader would hold the pipe
            except (ProcessLookupError, PermissionError):
                pass
        if self._thread.is_alive():
            self._thread.join(5)


# ------------------------------------------------------------------ command line and HTTP

def exporter_parser(name: str, description: str, default_port: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m services.exporters.{name}", description=description)
    p.add_argument("--port", type=int, default=default_port,
                   help=f"port of /metrics (default {default_port}; 0 = any free port, see --ready-file)")
    p.add_argument("--addr", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 inside a container)")
    p.add_argument("--ready-file", type=Path,
                   help="once serving, write {port, pid, url} as JSON here (atomically)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--exit-with-parent", action="store_true",
                   help="exit when the process that started this one exits (used by start_local_exporters)")
    return p


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - one line per scrape would flood the log
        pass


class _MetricsServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # scrape threads never hold up shutdown


def listen(addr: str = "127.0.0.1", port: int = 0) -> WSGIServer:
    """Bind and listen on (addr, port) now, serving nothing yet: a taken port fails before any sensor
    starts. Raises OSError (EADDRINUSE when another process listens there)."""
    family, _, _, _, sockaddr = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    server_class = type("MetricsServer", (_MetricsServer,), {"address_family": family})
    return server_class(sockaddr[:2], _QuietHandler)


def claim_port(args: argparse.Namespace) -> WSGIServer:
    """:func:`listen` on --addr/--port, or exit 2 with a message that names them (never touching
    whoever holds the port)."""
    try:
        return listen(args.addr, args.port)
    except OSError as e:
        reason = "another process is listening there" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        print(f"error: cannot listen on {args.addr}:{args.port}: {reason}; choose another port with --port "
              "(0 = any free port, see --ready-file)", file=sys.stderr)
        raise SystemExit(2) from None


def serve(exporter: Exporter, port: int = 0, addr: str = "127.0.0.1", httpd: WSGIServer | None = None):
    """Serve ``exporter`` alone on its own registry over HTTP (daemon thread), on ``httpd`` if given
    (from :func:`listen`). Returns (httpd, url)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    httpd = httpd if httpd is not None else listen(addr, port)
    httpd.set_app(make_wsgi_app(registry))
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    host, bound_port = httpd.server_address[:2]
    host = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
    return httpd, f"http://{host}:{bound_port}/metrics"


def run_exporter(exporter: Exporter, args: argparse.Namespace, httpd: WSGIServer | None = None) -> int:
    """Serve until SIGTERM/SIGINT, then stop the exporter's threads and children. ``httpd``: the
    socket :func:`claim_port` bound before the exporter was built."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        httpd, url = serve(exporter, args.port, args.addr, httpd)
    except OSError as e:
        exporter.close()
        log.error("%s: cannot listen on %s:%s: %s; choose another port with --port", exporter.sensor,
                  args.addr, args.port, e)
        return 2
    log.info("%s exporter serving %s", exporter.sensor, url)
    if args.ready_file:
        tmp = Path(f"{args.ready_file}.tmp")
        tmp.write_text(json.dumps({"port": httpd.server_port, "pid": os.getpid(), "url": url}))
        tmp.replace(args.ready_file)
    parent = os.getppid()
    try:
        while not stop.wait(1.0):
            if getattr(args, "exit_with_parent", False) and os.getppid() != parent:
                log.info("%s: parent %d gone, exiting", exporter.sensor, parent)
                break
    finally:
        httpd.shutdown()
        exporter.close()
    return 0
