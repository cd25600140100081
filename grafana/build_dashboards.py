"""Write the wattserve dashboards (grafana/dashboards/*.json) from grafana/boards/ (grafanalib).

    make dashboards                              # rewrite the JSON files (commit them with the code)
    python grafana/build_dashboards.py --check   # exit 1, naming the files, if the JSON is not current

The dashboards read the metric contract of services/inference/metrics.py, of the exporters
(services/exporters: wattserve_power_watts / wattserve_energy_joules_total with source, estimated,
domain, device; wattserve_sensor_up / _info ...) and of the bench's exporter (loadgen/bench_exporter.py).
Every energy or power legend shows where the number comes from, so an estimate never passes for a
measurement. Grafana loads every file in grafana/dashboards (grafana/provisioning/dashboards).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "grafana" / "dashboards"
REGENERATE = "make dashboards"


def render() -> dict[Path, str]:
    """{file: JSON text} of every dashboard."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from grafana.boards import BOARDS
    from grafana.boards.common import to_dict

    return {OUT / b.FILE: json.dumps(to_dict(b.build()), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
            for b in BOARDS}


def stale(files: dict[Path, str]) -> list[str]:
    """What differs from the committed files: missing, different, or a JSON file no board writes."""
    out = [f"{p.name}: missing" for p in files if not p.is_file()]
    out += [f"{p.name}: not what grafana/boards/ writes" for p, text in files.items()
            if p.is_file() and p.read_text(encoding="utf-8") != text]
    out += [f"{p.name}: written by no board (Grafana would still load it)" for p in sorted(OUT.glob("*.json"))
            if p not in files]
    return out


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--check", action="store_true", help="only compare with the committed files; exit 1 if stale")
    args = ap.parse_args(argv)
    files = render()
    if args.check:
        problems = stale(files)
        if problems:
            print("grafana/dashboards is not current:\n  " + "\n  ".join(problems)
                  + f"\nregenerate with: {REGENERATE} (then commit grafana/dashboards)", file=sys.stderr)
            return 1
        print(f"grafana/dashboards: {len(files)} dashboards current")
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.json"):
        if old not in files:
            old.unlink()
            print(f"removed {shown(old)} (no board writes it)")
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {shown(path)} ({len(text.encode())} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
