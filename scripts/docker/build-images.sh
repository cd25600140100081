#!/usr/bin/env bash
# Build wattserve's images from images/Dockerfile (BuildKit, layer cache reused between runs).
#
#   scripts/docker/build-images.sh [cpu] [cuda] [prometheus] [all]     (default: cpu prometheus)
#
#   cpu         wattserve:cpu + wattserve:{torch,onnx,ov,jit}-cpu   (one deps layer, 4 ENV-only images)
#               + wattserve:compile-cpu (one more layer: inductor's C++ compiler)
#               + wattserve:llamacpp-cpu (one more layer: llama-cpp-python, compiled in a build stage: the
#                 first build compiles llama.cpp, minutes; a llama_cpp_python wheel of the pin in
#                 LLAMACPP_WHEELS (default ~/.cache/wattserve/wheels) is used instead)
#   cuda        wattserve:cuda + wattserve:{torch,onnx,jit,compile}-cuda    (CUDA 13 + cuDNN 9 wheels; ~10 GB)
#   prometheus  wattserve-prometheus (Debian's prometheus package on the base image)
#
# Env:
#   BASE_IMAGE        base for every image; default wattserve-base:bookworm when that image exists
#                     (scripts/docker/build-base.sh), else debian:bookworm-slim (pulled).
#   WHEELS_DIR        a folder holding the CPU torch wheel (torch-<pin>+cpu-*.whl); default: the
#                     host pip's find-links folders that hold it. The wheel is hard-linked (or copied)
#                     into images/wheels/ and the PyTorch CPU index is then not used. WHEELS_DIR=none:
#                     always use TORCH_INDEX_URL.
#   TORCH_INDEX_URL   default https://download.pytorch.org/whl/cpu (when no local wheel is found).
#   PIP_INDEX         a PyPI mirror (--index-url) for builds; default: $PIP_INDEX_URL if it is http(s).
#   HTTP_PROXY, HTTPS_PROXY, NO_PROXY   passed to the build when set.
#   WATTSERVE_IMAGE   image name (default wattserve); tags are the configuration names.
#   BUILD_PROGRESS    plain|auto|tty (default plain when not a terminal).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/common.sh"
root="$(repo_root)"
cd "$root"
log() { echo "[build-images] $*" >&2; }

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(cpu prometheus)
want() { local t; for t in "${targets[@]}"; do [ "$t" = "$1" ] || [ "$t" = all ] && return 0; done; return 1; }

if [ -z "${BASE_IMAGE:-}" ]; then
  if "$DOCKER" image inspect "$WATTSERVE_BASE_IMAGE" >/dev/null 2>&1; then BASE_IMAGE="$WATTSERVE_BASE_IMAGE"
  else BASE_IMAGE=debian:bookworm-slim; fi
fi

# The pinned CPU torch wheel from a local folder, if there is one.
torch_pin="$(sed -n 's/^torch==\([^ #]*\).*/\1/p' requirements.txt | head -n1)"
find_wheel_dirs() {
  if [ -n "${WHEELS_DIR:-}" ]; then echo "$WHEELS_DIR"; return; fi
  { echo "${PIP_FIND_LINKS:-}" | tr ' ' '\n'
    python3 -m pip config list 2>/dev/null | sed -n "s/^[^=]*find-links='\(.*\)'$/\1/p" | tr ' ' '\n'
  } | sed 's#^file://##' | grep -E '^/' | sort -u
}
rm -f images/wheels/*.whl
TORCH_INDEX_URL="${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
if [ "${WHEELS_DIR:-}" != none ]; then
  for d in $(find_wheel_dirs); do
    whl="$(ls "$d"/torch-"$torch_pin"+cpu-cp311-*linux*x86_64.whl 2>/dev/null | head -n1 || true)"
    if [ -n "$whl" ]; then
      ln -f "$whl" images/wheels/ 2>/dev/null || cp -f "$whl" images/wheels/
      log "CPU torch from the local wheel $whl"
      TORCH_INDEX_URL=""
      break
    fi
  done
fi
[ -z "$TORCH_INDEX_URL" ] || log "CPU torch from $TORCH_INDEX_URL"
# a llama-cpp-python wheel of the pin built here before (scripts/install-llamacpp.sh keeps them): the
# llamacpp-build stage then installs it instead of compiling llama.cpp again
llamacpp_pin="$(sed -n 's/^llama-cpp-python==\([^ #]*\).*/\1/p' requirements-llamacpp.txt | head -n1)"
# (its own folder: the shared deps layer, which mounts images/wheels, must not depend on it)
rm -f images/wheels-llamacpp/*.whl
for whl in "${LLAMACPP_WHEELS:-$HOME/.cache/wattserve/wheels}"/llama_cpp_python-"$llamacpp_pin"-*.whl; do
  [ -f "$whl" ] || continue
  ln -f "$whl" images/wheels-llamacpp/ 2>/dev/null || cp -f "$whl" images/wheels-llamacpp/
  log "llama-cpp-python from the local wheel $whl"
  break
done

if [ -z "${PIP_INDEX:-}" ] && [[ "${PIP_INDEX_URL:-}" == http* ]]; then PIP_INDEX="$PIP_INDEX_URL"; fi
version="$(git describe --always --dirty --tags 2>/dev/null || echo unknown)"
progress="${BUILD_PROGRESS:-$([ -t 2 ] && echo auto || echo plain)}"
common_args=(--progress "$progress" --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "CUDA_BASE_IMAGE=${CUDA_BASE_IMAGE:-$BASE_IMAGE}"
             --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL" --build-arg "PIP_INDEX=${PIP_INDEX:-}"
             --build-arg "WATTSERVE_VERSION=$version")
for v in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
  [ -z "${!v:-}" ] || common_args+=(--build-arg "$v=${!v}")
done
[ -z "${TORCH_CUDA_INDEX_URL:-}" ] || common_args+=(--build-arg "TORCH_CUDA_INDEX_URL=$TORCH_CUDA_INDEX_URL")

build() {  # build <target> <tag>
  local t0=$(date +%s)
  "$DOCKER" build -f images/Dockerfile --target "$1" -t "$2" "${common_args[@]}" . \
    > >(grep -v -E '^#[0-9]+ (sha256|extracting|transferring|[0-9.]+ [kMG]?B /)' >&2) \
    || { log "FAILED: $2"; return 1; }
  log "$2 built in $(( $(date +%s) - t0 ))s"
}

t_all=$(date +%s)
log "base $BASE_IMAGE, source $version"
if want cpu; then
  build cpu "$WATTSERVE_IMAGE:cpu"
  for c in torch-cpu onnx-cpu ov-cpu jit-cpu ovgenai-cpu ct2-cpu compile-cpu llamacpp-cpu; do build "$c" "$WATTSERVE_IMAGE:$c"; done
fi
if want cuda; then
  build cuda "$WATTSERVE_IMAGE:cuda"
  for c in torch-cuda onnx-cuda jit-cuda ct2-cuda compile-cuda; do build "$c" "$WATTSERVE_IMAGE:$c"; done
fi
if want prometheus; then
  t0=$(date +%s)
  "$DOCKER" build -f images/prometheus/Dockerfile -t "${WATTSERVE_PROMETHEUS_IMAGE:-wattserve-prometheus}" \
    --progress "$progress" --build-arg "BASE_IMAGE=$BASE_IMAGE" images/prometheus >&2
  log "${WATTSERVE_PROMETHEUS_IMAGE:-wattserve-prometheus} built in $(( $(date +%s) - t0 ))s"
fi
rm -f images/wheels/*.whl images/wheels-llamacpp/*.whl
# earlier builds of these tags, now untagged
"$DOCKER" image prune -f --filter "label=org.opencontainers.image.title=wattserve" >/dev/null || true
log "done in $(( $(date +%s) - t_all ))s"
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep -E "^($WATTSERVE_IMAGE|wattserve-)" >&2 || true
