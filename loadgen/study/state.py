"""State of a study from its run folders (the only truth), abandoned runs, the one-runner lock."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from loadgen.runfolder import MANIFEST, RunFolder, read_requests
from loadgen.study.plan import Cell
from loadgen.study.spec import StudyError

RUNS_DIR = "runs"
LOCK_FILE = ".lock"
ABANDONED = "abandoned: the study runner stopped during this run (killed or crashed); found when the study resumed"


@dataclass
class CellState:
    complete: list[str] = field(default_factory=list)  # run ids
    failed: list[str] = field(default_factory=list)  # run ids of failed attempts (retries count these)
    other: list[str] = field(default_factory=list)  # interrupted or abandoned: not the cell's fault
    last_error: str | None = None

    @property
    def attempts(self) -> int:
        return len(self.complete) + len(self.failed) + len(self.other)


def _cell_of(m: dict) -> Cell | None:
    c = (m.get("study") or {}).get("cell") or {}
    try:
        return Cell(str(c["model"]), str(c["config"]), int(c["rep"]))
    except (KeyError, TypeError, ValueError):
        return None


def abandon(run_dir: Path, m: dict, error: str = ABANDONED) -> dict:
    """A run whose runner died mid-way (``status: running``): keep every row it recorded and mark it
    failed, so nobody counts it; a docker runner's container is removed."""
    folder = RunFolder(run_dir)
    if folder.raw_requests_path.exists() or not folder.requests_path.exists():
        rows = folder.finalize_requests()
    else:  # finalized already, by a resume cut off before it could rewrite run.json
        rows = read_requests(folder.requests_path)
    if m.get("runner") == "docker":
        from loadgen.runners import _docker, container_name

        with contextlib.suppress(Exception):
            _docker("rm", "-f", container_name(m.get("run_id")), timeout=60)
    m = {**m, "status": "failed", "error": error, "abandoned": True, "finished_at": time.time()}
    m["summary"] = {**(m.get("summary") or {}), "recorded": len(rows), "ok": sum(r["status"] == "ok" for r in rows)}
    folder.write_manifest(m)
    return m


def reconcile(study_dir: Path, name: str, in_flight=None) -> tuple[dict[Cell, CellState], list[str]]:
    """Read every run folder of the study; abandoned runs are marked failed. Returns the state of
    each cell that has runs, and notes on what was found (for the user). ``in_flight(manifest)``: the
    error to abandon a ``running`` run with, or None when its runner is still at work (a Slurm job)."""
    cells: dict[Cell, CellState] = collections.defaultdict(CellState)
    notes = []
    runs = study_dir / RUNS_DIR
    for d in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
        path = d / MANIFEST
        if not path.is_file():
            notes.append(f"{d.name}: no run.json (cut off as it was created); ignored")
            continue
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            notes.append(f"{d.name}: unreadable run.json ({exc}); ignored")
            continue
        cell = _cell_of(m)
        if cell is None or (m.get("study") or {}).get("name") != name:
            notes.append(f"{d.name}: not a run of study {name!r}; ignored")
            continue
        if m.get("status") == "running":
            why = in_flight(m) if in_flight else ABANDONED
            if why is None:
                continue  # its job is still running it: neither done nor lost
            m = abandon(d, m, why)
            notes.append(f"{d.name} ({cell.label}): was cut off; marked failed (abandoned), the cell runs again")
        st = cells[cell]
        status = m.get("status")
        if status == "complete":
            st.complete.append(d.name)
        elif status == "failed" and not m.get("abandoned"):
            st.failed.append(d.name)
            st.last_error = m.get("error")
        else:
            st.other.append(d.name)
            st.last_error = m.get("error")
    return cells, notes


@contextlib.contextmanager
def study_lock(study_dir: Path):
    """One runner per study (the lock dies with its process, SIGKILL included)."""
    study_dir.mkdir(parents=True, exist_ok=True)
    fh = open(study_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "?"
        fh.close()
        raise StudyError(f"study {study_dir.name!r} is already running (pid {holder}; lock {study_dir / LOCK_FILE})") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    try:
        yield
    finally:
        fh.close()
