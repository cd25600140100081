"""Wall power and energy per outlet from a NETIO PowerBOX/PowerPDU's JSON API (``netio.json``).

    NETIO_USER=... NETIO_PASSWORD=... python -m services.exporters.netio --port 9654 \\
        --netio-url http://<device>/netio.json [--outputs 1,2] [--interval 1] [--timeout 0.8]

A poll thread GETs netio.json every --interval seconds (1 s default; below 0.5 s is refused: the device
answers about one request per 0.5-1 s) with every wait bounded by --timeout. Each outlet's ``Load`` (W)
is integrated trapezoidally into a joules counter (domain="wall", device="outlet<ID>",
method="power-integral"): the device's own ``Energy`` counters count whole Wh (3600 J steps), too coarse
for runs this short; they are exported apart as wattserve_netio_energy_watt_hours_total. Credentials come
from NETIO_USER/NETIO_PASSWORD or --auth-file (``user:password``) and are never logged. An unreachable
or slow device (no good answer within max(3 x interval, interval + timeout)) is reported down, with no
energy series.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from services.exporters.common import (Exporter, Poller, PowerIntegrator, SensorUnavailable, claim_port,
                                       counter, energy_family, exporter_parser, gauge, power_family,
                                       redact_url, run_exporter, setup_logging)

MIN_INTERVAL_S = 0.5
MAX_BODY = 1 << 20


def read_auth(auth_file: Path | None) -> tuple[str, str] | None:
    if auth_file is not None:
        text = auth_file.read_text().strip().splitlines()
        user, sep, password = (text[0] if text else "").partition(":")
        if not sep:
            raise SystemExit(f"{auth_file}: expected one line 'user:password'")
        return user, password
    user = os.environ.get("NETIO_USER")
    return (user, os.environ.get("NETIO_PASSWORD", "")) if user else None


class NetioExporter(Exporter):
    sensor = "netio"
    source = "netio"

    def __init__(self, url: str, outputs: list[int] | None = None, auth: tuple[str, str] | None = None,
                 interval_s: float = 1.0, timeout_s: float = 0.8, max_gap_s: float | None = None) -> None:
        super().__init__()
        if interval_s < MIN_INTERVAL_S:
            raise ValueError(f"interval {interval_s} s is below {MIN_INTERVAL_S} s: the NETIO answers about "
                             "one request per 0.5-1 s")
        parts = urlsplit(url)
        if parts.username and auth is None:  # http://user:pw@host/...: move them into the auth header
            auth = (unquote(parts.username), unquote(parts.password or ""))
        self.url = self.shown_url = redact_url(url)  # the secret never sits in a URL that may be logged
        self.secrets = [x for x in (auth[1] if auth else None, parts.password) if x]
        logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every request URL at INFO
        self.outputs, self.interval_s, self.timeout_s = outputs, interval_s, timeout_s
        self.max_gap_s = max_gap_s if max_gap_s is not None else max(5.0, 5 * interval_s)
        self.stale_s = max(3 * interval_s, interval_s + timeout_s)
        self.client = httpx.Client(auth=auth, timeout=httpx.Timeout(timeout_s),
                                   headers={"Accept": "application/json"})
        self.integrators: dict[int, PowerIntegrator] = {}
        self.doc: dict | None = None
        self.last_ok: float | None = None   # monotonic
        self.last_error = "no answer yet"
        self.polls = self.failures = 0
        self.poller = Poller(self.poll, interval_s, "netio-poll").start()

    def fetch(self) -> dict:
        """GET netio.json within ``timeout_s`` overall (connect, each read, and the whole body)."""
        deadline = time.monotonic() + self.timeout_s
        with self.client.stream("GET", self.url) as r:
            if r.status_code == 401:
                raise RuntimeError("HTTP 401: wrong or missing credentials (NETIO_USER/NETIO_PASSWORD or "
                                   "--auth-file)")
            if r.status_code >= 400:
                raise RuntimeError(f"HTTP {r.status_code}")
            body = bytearray()
            for chunk in r.iter_bytes():
                body += chunk
                if time.monotonic() > deadline:
                    raise TimeoutError(f"answer took longer than {self.timeout_s} s")
                if len(body) > MAX_BODY:
                    raise RuntimeError("answer larger than 1 MiB: not netio.json")
        return json.loads(bytes(body))

    def poll(self) -> None:
        t0 = time.time()
        try:
            doc = self.fetch()
            outputs = {int(o["ID"]): o for o in doc.get("Outputs", [])}
            loads = {i: float(outputs[i]["Load"]) for i in (self.outputs or sorted(outputs))}
        except KeyError as e:
            self._failed(f"netio.json from {self.shown_url} has no outlet/field {e}")
            return
        except Exception as e:
            # exception text, never the URL with its credentials
            self._failed(f"GET {self.shown_url} failed: {type(e).__name__}: {e or 'timed out'}")
            return
        t = (t0 + time.time()) / 2
        with self.lock:
            self.polls += 1
            for i, watts in loads.items():
                self.integrators.setdefault(i, PowerIntegrator(self.max_gap_s)).add(t, watts)
            self.doc, self.last_ok, self.last_sample_time = doc, time.monotonic(), t

    def _failed(self, message: str) -> None:
        with self.lock:
            self.failures += 1
            message = message.replace(self.url, self.shown_url)
            for secret in self.secrets:  # never let a password reach a log line or a label
                message = message.replace(secret, "***")
            self.last_error = message

    def read(self):
        if self.last_ok is None or time.monotonic() - self.last_ok > self.stale_s:
            raise SensorUnavailable(self.last_error)
        doc = self.doc or {}
        outs = {int(o["ID"]): o for o in doc.get("Outputs", [])}
        energy, power = energy_family(), power_family()
        wh = counter("netio_energy_watt_hours", "The device's own energy counters (whole Wh; "
                     "device=total is GlobalMeasure.TotalEnergy)", ["device"])
        current = gauge("netio_current_amperes", "Current per outlet (device=total: TotalCurrent), A", ["device"])
        pf = gauge("netio_power_factor", "Power factor per outlet (device=total: OverallPowerFactor)", ["device"])
        for i, integ in sorted(self.integrators.items()):
            o, dev = outs.get(i, {}), f"outlet{i}"
            energy.add_metric(["wall", dev, self.source, "false", "power-integral"], integ.joules)
            if "Load" in o:
                power.add_metric(["wall", dev, self.source, "false"], float(o["Load"]))
            if "Energy" in o:
                wh.add_metric([dev], float(o["Energy"]))
            if "Current" in o:
                current.add_metric([dev], float(o["Current"]) / 1000.0)
            if "PowerFactor" in o:
                pf.add_metric([dev], float(o["PowerFactor"]))
        g = doc.get("GlobalMeasure", {})
        if "TotalEnergy" in g:
            wh.add_metric(["total"], float(g["TotalEnergy"]))
        if "TotalCurrent" in g:
            current.add_metric(["total"], float(g["TotalCurrent"]) / 1000.0)
        if "OverallPowerFactor" in g:
            pf.add_metric(["total"], float(g["OverallPowerFactor"]))
        yield from (energy, power, wh, current, pf)
        for key, name, doc_ in (("Voltage", "netio_voltage_volts", "Mains voltage, V"),
                                ("Frequency", "netio_frequency_hertz", "Mains frequency, Hz"),
                                ("TotalLoad", "netio_total_load_watts", "Load of all outlets, W")):
            if key in g:
                fam = gauge(name, doc_)
                fam.add_metric([], float(g[key]))
                yield fam
        a = doc.get("Agent", {})
        info = gauge("netio_info", "The metered device (value 1)", ["model", "device_name", "version"])
        info.add_metric([str(a.get("Model", "")), str(a.get("DeviceName", "")), str(a.get("Version", ""))], 1)
        yield info
        polls = counter("netio_polls", "Polls of netio.json by outcome", ["outcome"])
        polls.add_metric(["ok"], self.polls)
        polls.add_metric(["failed"], self.failures)
        yield polls

    def close(self) -> None:
        self.poller.stop()
        self.client.close()


def main(argv: list[str] | None = None) -> int:
    p = exporter_parser("netio", __doc__.splitlines()[0], 9654)
    p.add_argument("--netio-url", default=os.environ.get("NETIO_URL"),
                   help="URL of netio.json, e.g. http://192.0.2.10/netio.json (default: $NETIO_URL; give "
                        "credentials by NETIO_USER/NETIO_PASSWORD or --auth-file: a command line is public)")
    p.add_argument("--outputs", default=None, help="outlet IDs to meter, e.g. 1,2 (default: all)")
    p.add_argument("--auth-file", type=Path, default=None,
                   help="file with one line user:password (default: $NETIO_USER/$NETIO_PASSWORD)")
    p.add_argument("--interval", type=float, default=1.0, help=f"poll interval, s (>= {MIN_INTERVAL_S}; default 1)")
    p.add_argument("--timeout", type=float, default=0.8, help="bound on each poll, s (default 0.8)")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    if not args.netio_url:
        p.error("--netio-url (or NETIO_URL) is required")
    if args.interval < MIN_INTERVAL_S:
        p.error(f"--interval {args.interval} is below {MIN_INTERVAL_S} s: the NETIO answers about one "
                "request per 0.5-1 s")
    if args.timeout <= 0:
        p.error("--timeout must be > 0")
    outputs = [int(x) for x in args.outputs.split(",")] if args.outputs else None
    auth = read_auth(args.auth_file)
    httpd = claim_port(args)  # a taken port fails before the device is polled
    exporter = NetioExporter(args.netio_url, outputs, auth, args.interval, args.timeout)
    return run_exporter(exporter, args, httpd)


if __name__ == "__main__":
    raise SystemExit(main())
