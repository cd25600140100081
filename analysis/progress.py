"""A progress display for long steps: a tqdm bar on a terminal, a few plain lines otherwise."""

from __future__ import annotations

import sys
import time


class _Lines:
    """Prints ``desc: n/total`` at about every 10 % once a step has taken a second (for logs and CI,
    where a bar is noise)."""

    def __init__(self, total: int, desc: str, quiet: bool):
        self.total, self.desc, self.quiet, self.n = total, desc, quiet, 0
        self.t0, self.next_pct = time.monotonic(), 10

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.quiet or not self.total:
            return
        pct = 100 * self.n // self.total
        if pct >= self.next_pct and (time.monotonic() - self.t0 >= 1.0 or self.n == self.total and self.next_pct > 10):
            elapsed = time.monotonic() - self.t0
            print(f"{self.desc}: {self.n}/{self.total} ({elapsed:.0f} s)", file=sys.stderr, flush=True)
            self.next_pct = pct // 10 * 10 + 10

    def close(self) -> None:
        pass


def progress(total: int, desc: str, quiet: bool = False, unit: str = "run"):
    if not quiet and sys.stderr.isatty():
        try:
            from tqdm import tqdm

            return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)
        except ImportError:
            pass
    return _Lines(total, desc, quiet)


def say(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)
