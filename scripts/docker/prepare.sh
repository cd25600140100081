#!/usr/bin/env bash
# Prepare a model's artifacts into the cache volume, from the configuration's own image, with the
# command line of `python -m loadgen.prepare` (its last stdout line: one JSON object) — or, with
# --all, of `python -m services.models.prepare` (several configurations):
#
#   scripts/docker/prepare.sh --config onnx-cpu --model tiny --threads 2 [--precision fp32] [--revision R]
#   scripts/docker/prepare.sh --all --model tiny --config cpu
#
# Artifacts land in the volume $WATTSERVE_CACHE_VOLUME (default wattserve-cache, created if missing)
# at /cache; paths printed are the container's. Env as scripts/docker/serve.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/common.sh"

module=loadgen.prepare
if [ "${1:-}" = --all ]; then module=services.models.prepare; shift; fi
config="" model=""
args=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --config=*) config="${1#*=}"; shift ;;
    --model) model="$2"; shift 2 ;;
    --model=*) model="${1#*=}"; shift ;;
    *) shift ;;
  esac
done
[ -n "$config" ] || { echo "usage: $0 [--all] --config CONFIG --model MODEL ..." >&2; exit 2; }
case "$config" in
  *-cpu|*-cuda) image="$WATTSERVE_IMAGE:$config" ;;
  cuda) image="$WATTSERVE_IMAGE:cuda" ;;
  *) image="$WATTSERVE_IMAGE:cpu" ;;   # cpu, all, comma lists
esac
volume="${WATTSERVE_CACHE_VOLUME:-wattserve-cache}"
"$DOCKER" image inspect "$image" >/dev/null 2>&1 \
  || { echo "error: no image $image; build it: scripts/docker/build-images.sh" >&2; exit 2; }
"$DOCKER" volume inspect "$volume" >/dev/null 2>&1 || "$DOCKER" volume create "$volume" >/dev/null

run=(run --rm --init -v "$volume:/cache" --no-healthcheck)
for v in HF_HUB_OFFLINE HF_TOKEN HF_ENDPOINT; do [ -z "${!v:-}" ] || run+=(-e "$v"); done
[[ "$config" == *cuda* ]] && run+=(--gpus all)
if [ -n "$model" ] && [ -d "$model" ]; then
  abs="$(cd "$model" && pwd)"
  run+=(-v "$abs:/models/$(basename "$abs"):ro")
  for i in "${!args[@]}"; do
    if [ "${args[$i]}" = "$model" ]; then args[$i]="/models/$(basename "$abs")"; fi
    if [ "${args[$i]}" = "--model=$model" ]; then args[$i]="--model=/models/$(basename "$abs")"; fi
  done
fi
exec "$DOCKER" "${run[@]}" "$image" python -m "$module" "${args[@]}"
