"""This machine's memory bandwidth, STREAM-style, for the roofline benchmark (benchmarks/roofline.py).

Two of STREAM's kernels over float64 arrays far larger than the last-level cache, run by torch on the
engines' thread count (``torch.set_num_threads``): **copy** ``c = a`` and **triad** ``a = b + q·c``,
and, beside them, **read** ``sum(a)`` (reads only, as decoding reads its weights; not a STREAM kernel).
Bytes are counted as STREAM counts them: the arrays' bytes read and written (copy 2 arrays, triad 3,
read 1), no write-allocate traffic. Each kernel runs ``repeats`` times after one untimed pass; the best (STREAM's
figure) and the median of those are reported in GB/s (10⁹ bytes/s). Arrays smaller than
``LLC_FACTOR`` × the last-level cache would measure the cache, not memory: the result says so.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

#: STREAM's rule: each array at least 4 × the sum of the caches (here: the last-level cache)
LLC_FACTOR = 4
DEFAULT_ARRAY_MIB = 256
#: bytes each kernel moves, in arrays (STREAM's counting)
KERNEL_ARRAYS = {"copy": 2, "triad": 3, "read": 1}
TRIAD_SCALAR = 3.0


def last_level_cache_bytes(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int | None:
    """The largest cache of CPU 0 (sysfs ``index*/size``, e.g. ``32768K``), in bytes; None if unreadable."""
    sizes = []
    for index in root.glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    return max(sizes) if sizes else None


def measure(threads: int, array_mib: int = DEFAULT_ARRAY_MIB, repeats: int = 10) -> dict:
    """Copy, triad and read bandwidth (GB/s, best and median of ``repeats``) on ``threads`` torch threads."""
    import torch

    if repeats < 1 or array_mib < 1:
        raise ValueError("repeats and array_mib must be at least 1")
    torch.set_num_threads(threads)
    n = array_mib * 2**20 // 8
    a, b, c = (torch.full((n,), v, dtype=torch.float64) for v in (1.0, 2.0, 0.0))
    kernels = {"copy": lambda: c.copy_(a), "triad": lambda: torch.add(b, c, alpha=TRIAD_SCALAR, out=a),
               "read": lambda: a.sum()}
    out: dict = {"threads": threads, "array_bytes": n * 8, "repeats": repeats, "kernels": {}}
    for name, kernel in kernels.items():
        kernel()  # untimed: pages touched, threads started
        seconds = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            kernel()
            seconds.append(time.perf_counter() - t0)
        moved = KERNEL_ARRAYS[name] * n * 8
        out["kernels"][name] = {"bytes_moved": moved, "seconds": seconds,
                                "best_gb_s": moved / min(seconds) / 1e9,
                                "median_gb_s": moved / statistics.median(seconds) / 1e9}
    llc = last_level_cache_bytes()
    out["llc_bytes"] = llc
    out["arrays_exceed_llc"] = None if llc is None else n * 8 >= LLC_FACTOR * llc
    del a, b, c
    return out
