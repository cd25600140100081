#!/usr/bin/env bash
# Make sure a Docker engine answers: install Debian's docker.io (and docker-compose v1) if the
# engine binaries are missing, start dockerd in the background if nothing answers, wait for it.
#
#   scripts/docker/start-dockerd.sh            # idempotent; exit 0 once `docker info` answers
#
# Env: DOCKER (client, default /usr/bin/docker when present), DOCKERD_LOG (default
# /var/log/wattserve-dockerd.log), DOCKERD_WAIT_S (default 60), WATTSERVE_NO_INSTALL=1 (never
# apt-get install; fail instead). Installing and starting need root; where a Docker engine is
# already managed (systemd, Docker Desktop) this script only checks that it answers.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/docker/common.sh
. "$here/common.sh"

log() { echo "[start-dockerd] $*" >&2; }

if "$DOCKER" info >/dev/null 2>&1; then
  log "Docker engine answers ($("$DOCKER" version --format '{{.Server.Version}}' 2>/dev/null))"
  exit 0
fi

need_install=()
command -v dockerd >/dev/null 2>&1 || need_install+=(docker.io)
[ -x /usr/bin/docker ] || need_install+=(docker.io)
compose_cmd >/dev/null 2>&1 || need_install+=(docker-compose)
if [ ${#need_install[@]} -gt 0 ]; then
  if [ "${WATTSERVE_NO_INSTALL:-0}" = 1 ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "missing: ${need_install[*]} (install Docker Engine and docker compose, or run as root on Debian)"
    exit 1
  fi
  log "installing ${need_install[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need_install[@]}" | sort -u) \
    iptables >/dev/null
  DOCKER=/usr/bin/docker
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { log "dockerd is not running and this is not root: start it (sudo)"; exit 1; }
  DOCKERD_LOG="${DOCKERD_LOG:-/var/log/wattserve-dockerd.log}"
  log "starting dockerd (log: $DOCKERD_LOG)"
  # containerd is started by dockerd itself when no system containerd runs.
  nohup dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
  disown || true
fi

deadline=$(( $(date +%s) + ${DOCKERD_WAIT_S:-60} ))
until "$DOCKER" info >/dev/null 2>&1; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "dockerd did not answer within ${DOCKERD_WAIT_S:-60}s; last log lines:"
    tail -n 20 "${DOCKERD_LOG:-/var/log/wattserve-dockerd.log}" >&2 2>/dev/null || true
    exit 1
  fi
  sleep 1
done
log "Docker engine answers ($("$DOCKER" version --format '{{.Server.Version}}'), storage driver $("$DOCKER" info --format '{{.Driver}}'))"
