"""Stands in for ``nvidia-smi --query-gpu=<fields> --format=csv -lms N``: prints the CSV header with
units, then one row per GPU every N ms, as nvidia-smi does (``45.30 W``, ``1234 MiB``, ``37 %``,
``[N/A]``). FAKE_SMI_WATTS = comma-separated constant power per GPU; FAKE_SMI_FAIL=1 prints the
driver error and exits 9 like nvidia-smi on a host without a GPU."""

import os
import sys
import time
from datetime import datetime

UNITS = {"utilization.gpu": "%", "utilization.memory": "%", "memory.total": "MiB", "memory.used": "MiB",
         "power.draw": "W", "power.max_limit": "W"}
HEAD = {"gpu_name": "name"}


def main() -> int:
    if os.environ.get("FAKE_SMI_FAIL"):
        print("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
              "Make sure that the latest NVIDIA driver is installed and running.")
        return 9
    args = sys.argv[1:]
    fields = next(a.split("=", 1)[1] for a in args if a.startswith("--query-gpu=")).split(",")
    ms = int(args[args.index("-lms") + 1]) if "-lms" in args else 0
    watts = [float(w) for w in os.environ.get("FAKE_SMI_WATTS", "45.3").split(",")]
    print(", ".join(HEAD.get(f, f) + (f" [{UNITS[f]}]" if f in UNITS else "") for f in fields), flush=True)
    while True:
        ts = datetime.now().strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
        for i, w in enumerate(watts):
            vals = {"index": str(i), "uuid": f"GPU-fake-smi-{i}", "timestamp": ts, "gpu_name": "NVIDIA GeForce RTX 4090",
                    "utilization.gpu": "37 %", "utilization.memory": "5 %", "memory.total": "24564 MiB",
                    "memory.used": "1234 MiB", "power.draw": f"{w:.2f} W", "power.max_limit": "[N/A]",
                    "temperature.gpu": "41"}
            print(", ".join(vals[f] for f in fields), flush=True)
        if not ms:
            return 0
        time.sleep(ms / 1000)


if __name__ == "__main__":
    raise SystemExit(main())
