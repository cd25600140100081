# Sourced by scripts/docker/*.sh: which docker client, which compose, image names.
# shellcheck shell=bash

# The Docker CLI. BuildKit builds need a client with BuildKit built in (Debian's docker.io,
# /usr/bin/docker) or the buildx plugin; a bare static CLI without buildx (as may sit first on
# PATH in /usr/local/bin) refuses DOCKER_BUILDKIT=1, so prefer /usr/bin/docker.
if [ -z "${DOCKER:-}" ]; then
  if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER="$(command -v docker || echo docker)"; fi
fi
export DOCKER
export DOCKER_BUILDKIT=1

# Image names (override to push to a registry of your own).
WATTSERVE_IMAGE="${WATTSERVE_IMAGE:-wattserve}"            # wattserve:<config>, e.g. wattserve:onnx-cpu
WATTSERVE_BASE_IMAGE="${WATTSERVE_BASE_IMAGE:-wattserve-base:bookworm}"
export WATTSERVE_IMAGE WATTSERVE_BASE_IMAGE

repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd; }

# `docker compose` (v2 plugin) where it exists, else docker-compose (v1, Debian's package).
compose_cmd() {
  if "$DOCKER" compose version >/dev/null 2>&1; then
    echo "$DOCKER compose"
  elif command -v docker-compose >/dev/null 2>&1; then
    echo "docker-compose"
  else
    return 1
  fi
}
