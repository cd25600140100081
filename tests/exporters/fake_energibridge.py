"""Stands in for the EnergiBridge binary: same command line (``[-i|--interval MS] [-o|--output F] CMD...``),
same CSV (``Delta,Time,<sorted columns>``, Time in epoch ms, values as Rust prints f64), written to
stdout or --output while CMD runs. CPU_ENERGY (J) is a RAPL MSR counter in joules that wraps:
(FAKE_EB_START_J + FAKE_EB_WATTS x elapsed) mod FAKE_EB_WRAP_J."""

import argparse
import os
import subprocess
import sys
import time


def fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("-i", "--interval", type=int, default=200)
    p.add_argument("-o", "--output")
    p.add_argument("-m", "--max-execution", type=int, default=0)
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args()
    if not a.command:
        print("Usage: EnergiBridge <command>", file=sys.stderr)
        return 1
    watts = float(os.environ.get("FAKE_EB_WATTS", "40"))
    start = float(os.environ.get("FAKE_EB_START_J", "0"))
    wrap = float(os.environ.get("FAKE_EB_WRAP_J", "65536"))
    ncpu = 2
    out = open(a.output, "w") if a.output else sys.stdout
    child = subprocess.Popen(a.command)
    t0 = time.time()
    cols = (["CPU_ENERGY (J)"] + [f"CPU_FREQUENCY_{i}" for i in range(ncpu)]
            + [f"CPU_USAGE_{i}" for i in range(ncpu)] + ["TOTAL_MEMORY", "TOTAL_SWAP", "USED_MEMORY", "USED_SWAP"])
    out.write(",".join(["Delta", "Time"] + cols) + "\n")
    out.flush()
    prev = time.time()
    try:
        while child.poll() is None:
            now = time.time()
            energy = (start + watts * (now - t0)) % wrap
            vals = [energy, 3000, 3000, 25.0, 75.0, 34359738368, 0, 10188488704, 0]
            delta = int((now - prev) * 1000)
            out.write(",".join([str(delta), str(int(now * 1000))] + [fmt(v) for v in vals]) + "\n")
            out.flush()
            prev = now
            time.sleep(a.interval / 1000)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        if child.poll() is None:
            child.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
