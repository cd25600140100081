"""The wattserve cache: locally built models and prepared engine artifacts.

Everything in it is built into a temporary sibling and renamed into place under a file lock, so a
crash never leaves a half-built model or artifact that looks complete, and two processes never
build the same thing at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

COMPLETE_MARKER = ".complete"


def cache_root() -> Path:
    """``$WATTSERVE_CACHE``, else ``$XDG_CACHE_HOME/wattserve``, else ``~/.cache/wattserve``."""
    env = os.environ.get("WATTSERVE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "wattserve"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_complete(path: Path) -> bool:
    return (path / COMPLETE_MARKER).is_file()


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Return ``target``, calling ``build(tmpdir)`` first if it is not complete yet.

    ``build`` writes into an empty temporary folder; only when it returns is the folder marked
    complete and renamed to ``target``. A failed build leaves nothing behind.
    """
    if is_complete(target):
        return target
    with _locked(target):
        if is_complete(target):
            return target
        if target.exists():  # a leftover from a crash before the rename finished
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build(tmp)
            (tmp / COMPLETE_MARKER).write_text("ok\n")
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
