#!/usr/bin/env bash
# Refresh services/exporters/data/cpu_power.csv (the estimate's TDP table) from a codecarbon wheel on PyPI,
# without installing codecarbon (its dependencies are not wanted in the exporters):
#   scripts/update_cpu_power.sh [VERSION]      # default: the version named in estimate.py
# Then update CPU_TABLE_SOURCE in services/exporters/estimate.py and the sha256 in services/exporters/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
version=${1:-$(sed -n 's/^CPU_TABLE_SOURCE = "codecarbon-\([^"]*\)".*/\1/p' services/exporters/estimate.py)}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download --quiet --no-deps --only-binary :all: -d "$tmp" "codecarbon==$version"
"$PY" - "$tmp" <<'PYEOF'
import glob, sys, zipfile
whl = zipfile.ZipFile(glob.glob(sys.argv[1] + "/codecarbon-*.whl")[0])
names = whl.namelist()
open("services/exporters/data/cpu_power.csv", "wb").write(whl.read("codecarbon/data/hardware/cpu_power.csv"))
lic = next(n for n in names if n.endswith("/LICENSE") and ".dist-info/" in n)
open("services/exporters/data/cpu_power.LICENSE", "wb").write(whl.read(lic))
PYEOF
echo "codecarbon-$version: $(sha256sum services/exporters/data/cpu_power.csv)"
