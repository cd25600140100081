"""Checks made before anything starts: the results folder can be written and has room for a run.

A study lasts days; finding out at its first ``run.json`` that the disk is full or mounted
read-only wastes the setup and leaves half-written folders. So the bench and the study try a real
write (create, write, fsync, delete a probe file) and compare the free space with what a run
writes (mostly ``series.csv``: every sensor sample, every ``interval`` seconds), before starting.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

MiB = 1 << 20
MARGIN_BYTES = 64 * MiB  # never fill a disk to the last byte: logs, the OS and the service need room too
SAMPLE_BYTES_PER_TICK = 8 * 1024  # every exporter's samples at one tick as CSV rows (measured: 1.6 KiB with host + estimate)
FIXED_BYTES_PER_RUN = 2 * MiB  # requests.csv, run.json, logs, Locust's statistics


class PreflightError(ValueError):
    """The results folder cannot take the runs; the message says why and what to do."""


def run_bytes(warmup_s: float, cooldown_s: float, prompts: int, interval_s: float = 0.5,
              seconds_per_prompt: float = 2.0) -> int:
    """About what one run writes: the sensor series over its whole length, plus the fixed files."""
    seconds = warmup_s + cooldown_s + prompts * seconds_per_prompt + 30  # + load and stop
    return int(FIXED_BYTES_PER_RUN + seconds / max(interval_s, 0.05) * SAMPLE_BYTES_PER_TICK)


def _mib(n: float) -> str:
    return f"{n / MiB:,.1f} MiB"


def check_results(results: Path, need_bytes: int) -> int:
    """Raise :class:`PreflightError` unless ``results`` (created if absent) takes a real write and has
    ``need_bytes`` + a margin free; returns the free bytes. A folder it had to create and could not
    use is removed again: a refused start leaves nothing behind."""
    results = Path(results)
    created: list[Path] = []
    ok = False
    try:
        for parent in reversed([results, *results.parents]):
            if not parent.exists():
                parent.mkdir()
                created.append(parent)
        if not results.is_dir():
            raise PreflightError(f"results folder {results} exists and is not a directory")
        probe = results / f".wattserve-write-probe-{os.getpid()}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, b"\0" * 4096)
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
        free = shutil.disk_usage(results).free
        if free < need_bytes + MARGIN_BYTES:
            raise PreflightError(
                f"only {_mib(free)} free on the file system of {results}; a run writes about {_mib(need_bytes)} "
                f"and {_mib(MARGIN_BYTES)} are kept spare: free some space or choose another folder (RESULTS=...)")
        ok = True
        return free
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno == errno.ENOSPC:
            raise PreflightError(f"the file system of {results} is full ({why}): free some space or choose "
                                 "another folder (RESULTS=...)") from None
        raise PreflightError(f"results folder {results} is not writable ({why}): fix its permissions or mount, "
                             "or choose another folder (RESULTS=...)") from None
    finally:
        if not ok:
            for d in reversed(created):
                with contextlib.suppress(OSError):
                    d.rmdir()
