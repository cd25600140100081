"""What the protocol needs from a sensor sampler, and the no-op one used when there is none.

The real sampler (loadgen/sampler.py) scrapes exporters into ``series.csv``; the
protocol only starts it before the service starts (so ``load`` is sampled too) and stops it after
the service is gone, taking the sensor descriptors for run.json's ``sensors``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class Sampler(Protocol):
    def start(self, run_dir: Path) -> None:
        """Begin sampling into ``run_dir`` (``series.csv``)."""

    def stop(self) -> list[dict]:
        """Stop; return one ``{name, url, source, estimated, available, error}`` per sensor."""


class NullSampler:
    """No sensors: the run records ``sensors: []`` and its energy is missing, never 0 J.

    A sampler may also define ``service_started(pid)``: the protocol calls it once the service
    process exists (an exporter that watches the service's process tree needs the pid).
    """

    def start(self, run_dir: Path) -> None:
        pass

    def stop(self) -> list[dict]:
        return []


def local_sampler(interval_s: float):
    """The exporters this machine supports, sampled every ``interval_s`` (loadgen/sampler.py).

    ``WATTSERVE_POWERCAP_ROOT`` points the RAPL exporter at another powercap tree than
    /sys/class/powercap (a host's /sys mounted into a container, a simulated tree in the tests).
    """
    from loadgen.sampler import LocalSampler

    root = os.environ.get("WATTSERVE_POWERCAP_ROOT", "").strip()
    return LocalSampler(interval_s=interval_s, **({"powercap_root": Path(root)} if root else {}))
