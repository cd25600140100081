#!/usr/bin/env bash
# The inference service in a container, with the command line of `python -m services.inference`:
#
#   scripts/docker/serve.sh --config onnx-cpu --model tiny [--host 127.0.0.1] [--port 8000] [--threads N]
#                           [--precision fp32] [--revision R] [--trust-remote-code] [--log-level info] [--warmup N]
#                           [--warmup-prompts FILE]
#
# For the bench's docker runner: it runs in the foreground (exec docker run --rm, attached), so the
# caller's process handle is the container's: SIGTERM/SIGINT are proxied to the service (a clean
# uvicorn shutdown), the exit status is the service's, the log is stdout/stderr. The container is
# named $WATTSERVE_CONTAINER (default wattserve-serve-<port>); its host PID (for the host exporter's
# --pid) is `docker inspect -f '{{.State.Pid}}' NAME`. If the caller has to SIGKILL this process, the
# container survives it: `docker rm -f NAME` afterwards.
#
# Env: WATTSERVE_IMAGE (wattserve; the image is wattserve:<config>), WATTSERVE_CACHE_VOLUME
# (wattserve-cache, prepared by scripts/docker/prepare.sh), WATTSERVE_DOCKER_NETWORK (host: the
# service binds --host/--port on the host's loopback itself, no port proxy between client and service,
# as natively; bridge: publish 127.0.0.1:<port> -> 8000; any other name: join that network, e.g. the
# live stack's, unpublished, the service on :8000 at the container's address), WATTSERVE_HEALTHCHECK=1 keeps the image's
# probe (off by default: its python process every 30 s would sit inside the energy windows),
# HF_HUB_OFFLINE / HF_TOKEN / HF_ENDPOINT passed through. A --model that is a host folder is mounted
# read-only, and so is a --warmup-prompts host file (the run's prompt set: the warm-up covers its lengths).
# -cuda configurations get --gpus all.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/common.sh"

config="" model="" host="127.0.0.1" port="8000" warmup_prompts=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --config=*) config="${1#*=}"; shift ;;
    --model) model="$2"; shift 2 ;;
    --model=*) model="${1#*=}"; shift ;;
    --host) host="$2"; shift 2 ;;
    --host=*) host="${1#*=}"; shift ;;
    --port) port="$2"; shift 2 ;;
    --port=*) port="${1#*=}"; shift ;;
    --warmup-prompts) warmup_prompts="$2"; shift 2 ;;
    --warmup-prompts=*) warmup_prompts="${1#*=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
[ -n "$config" ] && [ -n "$model" ] || { echo "usage: $0 --config CONFIG --model MODEL [service options]" >&2; exit 2; }
image="$WATTSERVE_IMAGE:$config"
volume="${WATTSERVE_CACHE_VOLUME:-wattserve-cache}"
name="${WATTSERVE_CONTAINER:-wattserve-serve-$port}"
"$DOCKER" image inspect "$image" >/dev/null 2>&1 \
  || { echo "error: no image $image; build it: scripts/docker/build-images.sh ${config##*-}" >&2; exit 2; }
"$DOCKER" rm -f "$name" >/dev/null 2>&1 || true   # a leftover of a killed run

run=(run --rm --init --name "$name" -v "$volume:/cache" -e "WATTSERVE_CONFIG=$config")
for v in HF_HUB_OFFLINE HF_TOKEN HF_ENDPOINT; do [ -z "${!v:-}" ] || run+=(-e "$v"); done
[ "${WATTSERVE_HEALTHCHECK:-0}" = 1 ] || run+=(--no-healthcheck)
[[ "$config" == *-cuda ]] && run+=(--gpus all)
if [ -d "$model" ]; then
  abs="$(cd "$model" && pwd)"
  run+=(-v "$abs:/models/$(basename "$abs"):ro"); model="/models/$(basename "$abs")"
fi
if [ -n "$warmup_prompts" ]; then
  [ -f "$warmup_prompts" ] || { echo "error: --warmup-prompts $warmup_prompts: no such file" >&2; exit 2; }
  abs="$(cd "$(dirname "$warmup_prompts")" && pwd)/$(basename "$warmup_prompts")"
  run+=(-v "$abs:/warmup/prompts.jsonl:ro"); args+=(--warmup-prompts /warmup/prompts.jsonl)
fi
network="${WATTSERVE_DOCKER_NETWORK:-host}"
case "$network" in
  host)
    run+=(--network host)
    svc=(--host "$host" --port "$port") ;;
  bridge)
    run+=(-p "127.0.0.1:$port:8000")
    svc=(--host 0.0.0.0 --port 8000) ;;
  *)  # a compose stack's network (loadgen/stack.py): reached at the container's IP, published nowhere
    run+=(--network "$network" --label "wattserve.stack.network=$network")
    svc=(--host 0.0.0.0 --port 8000) ;;
esac
exec "$DOCKER" "${run[@]}" "$image" python -m services.inference --config "$config" --model "$model" \
  "${svc[@]}" "${args[@]}"
