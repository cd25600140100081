"""The run folder (docs/run-folder.md): the one module that writes and reads ``run.json``,
``requests.csv`` and ``series.csv``, and the validator analysis relies on.

Crash safety: the folder is created exclusively (a run is never overwritten); ``run.json`` is always
replaced atomically (temp file, fsync, rename), first with ``status: running`` and last with the
final status, so a folder whose run died with the runner still says ``running`` and is never
counted; ``requests.csv`` is written the same way from the rows the Locust replay appended.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = 1
STATUSES = ("running", "complete", "failed", "interrupted")
PHASES = ("load", "idle_before", "replay_start", "inference", "replay_stop", "idle_after")
REQUIRED_PHASES = ("load", "idle_before", "inference", "idle_after")  # replay_*: since the request-span window
RUNNERS = ("native", "docker")
REQUEST_COLUMNS = ("index", "task_id", "start", "end", "latency_s", "server_latency_s", "http_status", "status",
                   "prompt_tokens", "completion_tokens", "output", "token_ids", "error")
# added once the run's energy is known (analysis/quantities.py request_energy); absent in older folders
ENERGY_COLUMNS = ("energy_j", "prefill_j", "decode_j", "energy_provenance", "energy_resolved")
# per-request timing (docs/run-folder.md): time to first token, decode time, mean inter-token latency
TIMING_COLUMNS = ("ttft_s", "decode_s", "itl_mean_s")
OPTIONAL_COLUMNS = TIMING_COLUMNS + ENERGY_COLUMNS
MANIFEST = "run.json"
REQUESTS = "requests.csv"
RAW_REQUESTS = "requests.raw.csv"  # what the locustfile appends to during the replay
SERIES = "series.csv"
SERIES_COLUMNS = ("t", "sensor", "metric", "labels", "value")


class ManifestError(ValueError):
    """A run.json that does not follow docs/run-folder.md (the message lists every problem)."""


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "--", text).strip("-") or "model"


def make_run_id(config: str, model: str, rep: int, t: float | None = None) -> str:
    """``<UTC yyyymmddTHHMMSSZ>-<config>-<model slug>-r<rep>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if t is None else t))
    return f"{stamp}-{config}-{slug(model)}-r{rep}"


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str, allow_nan=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @classmethod
    def create(cls, results: Path, config: str, model: str, rep: int) -> "RunFolder":
        """Make a new, empty run folder; never reuses one (a clash waits for the next second).

        The path is absolute: children (Locust, the service) run in other working directories.
        """
        results = Path(results).expanduser().resolve()
        results.mkdir(parents=True, exist_ok=True)
        while True:
            path = results / make_run_id(config, model, rep)
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:
                time.sleep(1.0 - time.time() % 1.0 + 0.01)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def requests_path(self) -> Path:
        return self.path / REQUESTS

    @property
    def raw_requests_path(self) -> Path:
        return self.path / RAW_REQUESTS

    def write_manifest(self, manifest: dict) -> None:
        write_json_atomic(self.manifest_path, manifest)

    def finalize_requests(self) -> list[dict]:
        """Turn the replay's appended rows into ``requests.csv`` (ordered by index, typed, checked).

        A torn last line (the replay killed mid-write) is dropped; every complete row is kept.
        """
        rows = read_requests(self.raw_requests_path) if self.raw_requests_path.exists() else []
        rows.sort(key=lambda r: r["index"])
        write_requests(self.requests_path, rows)
        self.raw_requests_path.unlink(missing_ok=True)
        return rows

    def add_request_columns(self, extra: list[dict]) -> None:
        """Add per-request columns (energy; ENERGY_COLUMNS) to ``requests.csv``, row by row in order."""
        if not self.requests_path.exists():
            return
        rows = read_requests(self.requests_path)
        if len(rows) != len(extra):
            raise ValueError(f"{len(extra)} per-request values for {len(rows)} rows")
        write_requests(self.requests_path, [{**r, **e} for r, e in zip(rows, extra)])


def write_requests(path: Path, rows: list[dict]) -> None:
    """``requests.csv`` atomically: the contract's columns, then the optional ones any row has."""
    columns = list(REQUEST_COLUMNS) + [c for c in OPTIONAL_COLUMNS if any(r.get(c) is not None for r in rows)]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**{k: ("" if r.get(k) is None else r[k]) for k in columns},
                        "token_ids": " ".join(map(str, r["token_ids"]))})
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def _num(value: str, kind=float):
    return None if value in ("", None) else kind(float(value)) if kind is int else kind(value)


def _bool(value: str | None) -> bool | None:
    return None if value in ("", None) else value.strip().lower() in ("1", "true")


_OPTIONAL_TYPES = {"ttft_s": _num, "decode_s": _num, "itl_mean_s": _num, "energy_j": _num, "prefill_j": _num, "decode_j": _num,
                   "energy_provenance": lambda v: v or None, "energy_resolved": _bool}


def read_requests(path: Path) -> list[dict]:
    """Rows of a requests CSV with their types: ints, floats, ``token_ids`` as a list; '' -> None.
    Optional columns (OPTIONAL_COLUMNS) are read where present."""
    out = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
        optional = [c for c in OPTIONAL_COLUMNS if c in (reader.fieldnames or [])]
        for raw in reader:
            if None in raw or any(raw.get(c) is None for c in REQUEST_COLUMNS):
                continue  # a torn row
            try:
                out.append({
                    "index": int(raw["index"]), "task_id": raw["task_id"],
                    "start": _num(raw["start"]), "end": _num(raw["end"]), "latency_s": _num(raw["latency_s"]),
                    "server_latency_s": _num(raw["server_latency_s"]), "http_status": _num(raw["http_status"], int),
                    "status": raw["status"], "prompt_tokens": _num(raw["prompt_tokens"], int),
                    "completion_tokens": _num(raw["completion_tokens"], int), "output": raw["output"],
                    "token_ids": [int(t) for t in raw["token_ids"].split()], "error": raw["error"] or None,
                    **{c: _OPTIONAL_TYPES[c](raw[c]) for c in optional},
                })
            except ValueError:
                continue  # a torn row
    return out


# ------------------------------------------------------------------------------------ series.csv

class SeriesWriter:
    """Appends sensor samples to ``series.csv`` (header once), flushing about every ``flush_s`` seconds;
    ``close`` flushes and fsyncs. Rows: (t epoch s, sensor, metric, labels JSON with sorted keys, value)."""

    def __init__(self, run_dir: Path, flush_s: float = 1.0) -> None:
        self.path = Path(run_dir) / SERIES
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self.flush_s, self._flushed = flush_s, 0.0
        if fresh:
            self._writer.writerow(SERIES_COLUMNS)
            self._file.flush()

    def write(self, rows: list[tuple]) -> None:
        self._writer.writerows(rows)
        now = time.monotonic()
        if now - self._flushed >= self.flush_s:
            self._file.flush()
            self._flushed = now

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def read_series(run_dir: str | Path):
    """``series.csv`` of a run folder (or the file itself) as a DataFrame with columns t (float, epoch s),
    sensor, metric, labels (dict), value (float), sorted by t. A truncated last line (a crash mid-write)
    and rows that do not parse are dropped."""
    import io

    import pandas as pd  # lazily: the locustfile imports this module and must start fast

    path = Path(run_dir)
    if path.is_dir():
        path = path / SERIES
    data = path.read_bytes()
    data = data[: data.rfind(b"\n") + 1]  # a row cut short by a crash mid-write is dropped
    df = pd.read_csv(io.BytesIO(data), dtype={"sensor": str, "metric": str, "labels": str},
                     on_bad_lines="skip", engine="c") if data else pd.DataFrame()
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype=float if c in ("t", "value") else object)
                             for c in SERIES_COLUMNS})
    df["t"] = pd.to_numeric(df["t"], errors="coerce")
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df = df.dropna(subset=["t", "sensor", "metric", "labels"])
    cache: dict[str, dict | None] = {}

    def parse(s: str) -> dict | None:
        if s not in cache:
            try:
                d = json.loads(s)
                cache[s] = {str(k): str(v) for k, v in d.items()} if isinstance(d, dict) else None
            except ValueError:
                cache[s] = None
        return cache[s]

    df["labels"] = df["labels"].map(parse)
    df = df[df["labels"].notna()]
    df = df.sort_values("t", kind="stable").reset_index(drop=True)
    return df[list(SERIES_COLUMNS)]


# ------------------------------------------------------------------------------------ validation

_TYPES = {
    "schema": int, "run_id": str, "status": str, "config": str, "engine": str, "provider": str, "runner": str,
    "model": dict, "prompts": dict, "generation": dict, "protocol": dict, "phases": dict, "service": (dict, type(None)),
    "host": dict, "software": dict, "sensors": list, "summary": dict, "created_at": (int, float),
}
_SUB = {
    "model": ("name", "kind", "source", "revision", "content_hash", "params", "size_category"),
    "prompts": ("name", "path", "sha256", "count"),
    "generation": ("greedy", "max_length", "max_new_tokens", "ignore_eos", "threads", "precision"),
    "protocol": ("rep", "reps", "warmup_s", "cooldown_s", "request_timeout_s", "sample_interval_s"),
    "host": ("hostname", "os", "kernel", "cpu_model", "cpu_count", "ram_bytes", "gpus"),
    "summary": ("requests", "ok", "failed", "time_s", "energy"),
}
_SENSOR_KEYS = ("name", "url", "source", "estimated", "available", "error")


def _is_time(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 1e9


def manifest_problems(m: dict) -> list[str]:
    """Every way ``m`` departs from docs/run-folder.md (an empty list: valid)."""
    if not isinstance(m, dict):
        return ["run.json is not a JSON object"]
    problems = []
    for key, typ in _TYPES.items():
        if key not in m:
            problems.append(f"missing key {key!r}")
        elif not isinstance(m[key], typ) or isinstance(m[key], bool) and typ is int:
            problems.append(f"{key!r} has type {type(m[key]).__name__}")
    for key in ("error", "finished_at"):
        if key not in m:
            problems.append(f"missing key {key!r}")
    if problems:
        return problems
    if m["schema"] != SCHEMA:
        problems.append(f"schema {m['schema']} is not {SCHEMA}")
    status = m["status"]
    if status not in STATUSES:
        problems.append(f"status {status!r} is not one of {STATUSES}")
    if m["runner"] not in RUNNERS:
        problems.append(f"runner {m['runner']!r} is not one of {RUNNERS}")
    if m["config"] != f"{m['engine']}-{m['provider']}":
        problems.append(f"config {m['config']!r} is not engine-provider ({m['engine']}-{m['provider']})")
    if status in ("failed", "interrupted") and not isinstance(m["error"], str):
        problems.append(f"a {status} run needs an 'error' string")
    if status == "complete" and m["error"] is not None:
        problems.append("a complete run has error set")
    for key, subkeys in _SUB.items():
        problems += [f"{key}.{k} is missing" for k in subkeys if k not in m[key]]
    p = m["prompts"]
    if not (isinstance(p.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", p["sha256"])):
        problems.append("prompts.sha256 is not a sha256 hex digest")
    if not isinstance(p.get("count"), int) or p["count"] < 1:
        problems.append("prompts.count is not a positive integer")
    if m["generation"].get("greedy") is not True:
        problems.append("generation.greedy must be true")
    for s in m["sensors"]:
        if not isinstance(s, dict) or any(k not in s for k in _SENSOR_KEYS):
            problems.append(f"sensor entry {s!r} lacks one of {_SENSOR_KEYS}")
    phases = m["phases"]
    required = REQUIRED_PHASES if status == "complete" else ()
    last_end = None
    for name in PHASES:
        ph = phases.get(name)
        if ph is None:
            if name in required:
                problems.append(f"phases.{name} is missing")
            continue
        if not (isinstance(ph, dict) and _is_time(ph.get("start")) and _is_time(ph.get("end"))):
            problems.append(f"phases.{name} needs epoch-second floats 'start' and 'end'")
            continue
        if ph["end"] < ph["start"]:
            problems.append(f"phases.{name} ends before it starts")
        if last_end is not None and ph["start"] < last_end:
            problems.append(f"phases.{name} starts before the previous phase ends")
        last_end = ph["end"]
    if status == "complete":
        s = m["summary"]
        if not _is_time(m["finished_at"]):
            problems.append("a complete run needs finished_at")
        if s.get("requests") != p.get("count") or s.get("ok") != p.get("count") or s.get("failed") != 0:
            problems.append("a complete run answers every prompt: summary requests == ok == prompts.count, failed 0")
    return problems


def validate_manifest(m: dict) -> dict:
    """Return ``m`` if it follows the contract, else raise :class:`ManifestError` listing every problem."""
    problems = manifest_problems(m)
    if problems:
        raise ManifestError(f"run {m.get('run_id', '?') if isinstance(m, dict) else '?'}: " + "; ".join(problems))
    return m


def load_manifest(run_dir: Path) -> dict:
    return validate_manifest(json.loads((Path(run_dir) / MANIFEST).read_text()))


def timing_problems(rows: list[dict], tolerance_s: float = 1e-6) -> list[str]:
    """Per-request timing that cannot be (docs/run-folder.md): a first token before the send or after the
    answer, a negative decode time or one longer than the request, an ITL that is not decode time /
    (completion tokens - 1), or one given for fewer than 2 tokens."""
    from analysis.quantities import itl_mean_s

    bad: dict[str, list[int]] = {}
    for r in rows:
        ttft, decode, itl, latency = r.get("ttft_s"), r.get("decode_s"), r.get("itl_mean_s"), r["latency_s"]
        if ttft is not None and not -tolerance_s <= ttft <= latency + tolerance_s:
            bad.setdefault("ttft_s outside [0, latency_s]", []).append(r["index"])
        if decode is not None and not -tolerance_s <= decode <= latency + tolerance_s:
            bad.setdefault("decode_s outside [0, latency_s]", []).append(r["index"])
        if itl is not None or decode is not None:
            want = itl_mean_s(decode, r["completion_tokens"])
            if (itl is None) != (want is None) or (itl is not None and abs(itl - want) > tolerance_s):
                bad.setdefault("itl_mean_s is not decode_s / (completion_tokens - 1) (empty below 2 tokens)",
                               []).append(r["index"])
    return [f"{what} (rows {', '.join(map(str, idx[:5]))}{', ...' if len(idx) > 5 else ''})"
            for what, idx in bad.items()]


def validate_run(run_dir: Path) -> dict:
    """Manifest plus requests.csv: a complete run has one ok row per prompt, in order, in the window."""
    m = load_manifest(run_dir)
    if m["status"] in ("running",):
        return m
    path = Path(run_dir) / REQUESTS
    if not path.exists():
        raise ManifestError(f"run {m['run_id']}: {REQUESTS} is missing")
    rows = read_requests(path)
    if m["status"] == "complete":
        problems = []
        if [r["index"] for r in rows] != list(range(m["prompts"]["count"])):
            problems.append("requests.csv does not hold each prompt index exactly once, in order")
        if any(r["status"] != "ok" for r in rows):
            problems.append("a complete run has failed requests")
        inf = m["phases"]["inference"]
        if any(not (inf["start"] <= r["start"] <= r["end"] <= inf["end"]) for r in rows):
            problems.append("a request lies outside the inference window")
        if any(b["start"] < a["end"] for a, b in zip(rows, rows[1:])):
            problems.append("requests overlap or are out of order")
        problems += timing_problems(rows)
        if problems:
            raise ManifestError(f"run {m['run_id']}: " + "; ".join(problems))
    return m
