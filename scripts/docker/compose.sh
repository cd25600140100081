#!/usr/bin/env bash
# Run docker compose on compose/docker-compose.yml with wattserve's settings:
#
#   scripts/docker/compose.sh up        # build missing images, start the stack, wait for Prometheus
#   WATTSERVE_EXPOSE=1 scripts/docker/compose.sh up   # the same, plus the service and Prometheus on 127.0.0.1
#   scripts/docker/compose.sh down      # stop and remove it (the model cache volume is kept)
#   scripts/docker/compose.sh <any compose command and flags>     e.g. ps, logs -f inference, run --rm loadgen
#
# Env: CONFIG (onnx-cpu; a -cuda config adds compose/gpu.yml and the gpu profile), MODEL (tiny),
# WATTSERVE_PROFILES (default "dashboards", dropped with a warning when the Grafana image cannot be
# pulled; CI: empty; netio is added when NETIO_URL is set), COMPOSE_PROJECT_NAME (wattserve), WATTSERVE_CACHE_VOLUME (wattserve-cache),
# GRAFANA_ADMIN_PASSWORD (default: a random one kept in ~/.config/wattserve/grafana-admin-password),
# GRAFANA_PORT (3000), GRAFANA_IMAGE (grafana/grafana:11.6.0: used where it is local or can be pulled).
# Only Grafana is published (127.0.0.1); the service, Prometheus and the exporters
# talk over the compose network. WATTSERVE_EXPOSE=1 adds compose/expose.yml, which publishes the service
# (SERVICE_PORT, 8000) and Prometheus (PROMETHEUS_PORT, 9090) on 127.0.0.1 as well; set it for every
# compose.sh command of that stack (e.g. `port`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/common.sh"
root="$(repo_root)"
log() { echo "[compose] $*" >&2; }

compose="$(compose_cmd)" || { log "neither 'docker compose' nor docker-compose is installed (scripts/docker/start-dockerd.sh installs it)"; exit 1; }
# One configuration per stack; the bench's groups map to their ONNX Runtime member.
CONFIG="${CONFIG:-onnx-cpu}"
case "$CONFIG" in
  cpu|all|"") CONFIG=onnx-cpu ;;
  cuda) CONFIG=onnx-cuda ;;
  *,*) CONFIG="${CONFIG%%,*}" ;;
esac
export CONFIG MODEL="${MODEL:-tiny}"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-wattserve}"
export WATTSERVE_CACHE_VOLUME="${WATTSERVE_CACHE_VOLUME:-wattserve-cache}"
export WATTSERVE_UID="${WATTSERVE_UID:-$(id -u)}" WATTSERVE_GID="${WATTSERVE_GID:-$(id -g)}"
export RESULTS_DIR="${RESULTS_DIR:-$root/results}"
# Prometheus' file_sd folder: the bench (loadgen/stack.py) writes its targets there
export WATTSERVE_TARGETS_DIR="${WATTSERVE_TARGETS_DIR:-$root/compose/targets/$COMPOSE_PROJECT_NAME}"

files=(-f "$root/compose/docker-compose.yml")
case "${WATTSERVE_EXPOSE:-0}" in
  1|true|yes|on) exposed=1; files+=(-f "$root/compose/expose.yml") ;;
  0|false|no|off|"") exposed=0 ;;
  *) log "WATTSERVE_EXPOSE=$WATTSERVE_EXPOSE: use 1 (publish the service and Prometheus on 127.0.0.1) or 0"; exit 2 ;;
esac
profiles="${WATTSERVE_PROFILES-dashboards}"
if [[ "$CONFIG" == *-cuda ]]; then files+=(-f "$root/compose/gpu.yml"); profiles="$profiles gpu"; fi
[ -z "${NETIO_URL:-}" ] || profiles="$profiles netio"
COMPOSE_PROFILES="$(echo $profiles | tr ' ' ',')"
export COMPOSE_PROFILES

if [ -z "${GRAFANA_ADMIN_PASSWORD:-}" ]; then
  pwfile="${XDG_CONFIG_HOME:-$HOME/.config}/wattserve/grafana-admin-password"
  if [ ! -s "$pwfile" ]; then
    mkdir -p "$(dirname "$pwfile")"
    (umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(18))' > "$pwfile")
  fi
  GRAFANA_ADMIN_PASSWORD="$(cat "$pwfile")"
fi
export GRAFANA_ADMIN_PASSWORD

cmd="${1:-up}"; shift || true
case "$cmd" in
  up)
    "$DOCKER" volume inspect "$WATTSERVE_CACHE_VOLUME" >/dev/null 2>&1 || "$DOCKER" volume create "$WATTSERVE_CACHE_VOLUME" >/dev/null
    flavour=cpu; [[ "$CONFIG" == *-cuda ]] && flavour=cuda
    need=()
    for img in "$WATTSERVE_IMAGE:$CONFIG" "$WATTSERVE_IMAGE:cpu"; do
      "$DOCKER" image inspect "$img" >/dev/null 2>&1 || need=("$flavour" cpu)
    done
    if [ -z "${PROMETHEUS_IMAGE:-}" ] && ! "$DOCKER" image inspect wattserve-prometheus >/dev/null 2>&1; then need+=(prometheus); fi
    if [ ${#need[@]} -gt 0 ]; then "$here/build-base.sh"; "$here/build-images.sh" $(printf '%s\n' "${need[@]}" | sort -u); fi
    [ -d "$RESULTS_DIR" ] || mkdir -p "$RESULTS_DIR"
    mkdir -p "$WATTSERVE_TARGETS_DIR"
    if [[ ",$COMPOSE_PROFILES," == *,dashboards,* ]]; then
      grafana_image="${GRAFANA_IMAGE:-grafana/grafana:11.6.0}"
      if ! "$DOCKER" image inspect "$grafana_image" >/dev/null 2>&1 \
         && ! timeout 300 "$DOCKER" pull -q "$grafana_image" >/dev/null 2>&1; then
        log "WARNING: cannot pull $grafana_image (no registry?): starting without Grafana (profile dashboards off)"
        COMPOSE_PROFILES="$(echo ",$COMPOSE_PROFILES," | sed 's/,dashboards,/,/; s/^,//; s/,$//')"
        export COMPOSE_PROFILES
      fi
    fi
    log "$CONFIG / $MODEL, project $COMPOSE_PROJECT_NAME, profiles: ${COMPOSE_PROFILES:-none}"
    $compose "${files[@]}" up -d "$@"
    # Prometheus is not published: ask it from inside the compose network, from the estimate exporter
    # (always running, has python; the same path Grafana takes: http://prometheus:9090).
    ready=0
    for _ in $(seq 60); do
      if $compose "${files[@]}" exec -T estimate python -c \
           "import urllib.request as u; u.urlopen('http://prometheus:9090/-/ready', timeout=2)" >/dev/null 2>&1; then
        ready=1; break
      fi
      sleep 1
    done
    [ "$ready" = 1 ] || log "WARNING: Prometheus not ready after 60 tries: scripts/docker/compose.sh logs prometheus"
    published() {  # published <service> <port>: the host address it is published on, or nothing
      $compose "${files[@]}" port "$1" "$2" 2>/dev/null | tail -n1 | sed 's/^0\.0\.0\.0:/127.0.0.1:/'
    }
    if [ "$exposed" = 1 ]; then
      log "Prometheus  http://$(published prometheus 9090)"
      log "service     http://$(published inference 8000)  (ready once the model is loaded: scripts/docker/compose.sh logs -f inference)"
    else
      log "Prometheus  http://prometheus:9090 on the compose network only (WATTSERVE_EXPOSE=1 publishes it on 127.0.0.1)"
      log "service     http://inference:8000 on the compose network only (WATTSERVE_EXPOSE=1 publishes it on 127.0.0.1)"
    fi
    if [[ ",$COMPOSE_PROFILES," == *,dashboards,* ]]; then
      log "Grafana     http://$(published grafana 3000)  (anonymous viewer; admin: ${GRAFANA_ADMIN_USER:-wattserve}, password in ${pwfile:-\$GRAFANA_ADMIN_PASSWORD})"
    fi
    ;;
  down)
    # every profile, so services started under any of them stop too; volumes: only the project's
    # own (Prometheus/Grafana data with -v), never the external model cache.
    # first the bench's service containers on the stack's network (loadgen/stack.py; a bench killed
    # with SIGKILL leaves its container), else the network cannot be removed
    network="${COMPOSE_PROJECT_NAME}_default"
    leftovers="$("$DOCKER" ps -aq --filter "label=wattserve.stack.network=$network" 2>/dev/null || true)"
    [ -z "$leftovers" ] || { log "removing the bench's containers on $network"; "$DOCKER" rm -f $leftovers >/dev/null; }
    COMPOSE_PROFILES="dashboards,gpu,netio,bench" $compose "${files[@]}" down --remove-orphans "$@"
    rm -f "$WATTSERVE_TARGETS_DIR"/*.json "$WATTSERVE_TARGETS_DIR"/.*.json.tmp 2>/dev/null || true
    ;;
  *)
    exec $compose "${files[@]}" "$cmd" "$@"
    ;;
esac
