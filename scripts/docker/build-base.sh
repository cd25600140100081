#!/usr/bin/env bash
# Build the local base image wattserve-base:bookworm with debootstrap + `docker import`, for
# machines that cannot pull from a registry. Debian bookworm minbase + python3 (3.11, what the
# project pins), python3-venv, ca-certificates, libgomp1; the host's extra CA certificates
# (/usr/local/share/ca-certificates/*.crt, e.g. a TLS-intercepting proxy's) are added and
# update-ca-certificates run, so pip inside image builds trusts what the host trusts.
#
#   scripts/docker/build-base.sh          # skipped when the image exists
#   FORCE=1 scripts/docker/build-base.sh  # rebuild
#
# Env: DEBIAN_MIRROR (default: the host's apt mirror for bookworm, else deb.debian.org),
# DEBIAN_SUITE (bookworm), WATTSERVE_BASE_IMAGE (wattserve-base:bookworm), EXTRA_CA_DIR
# (/usr/local/share/ca-certificates). Needs root (debootstrap, chroot) and a running engine.
# Where a registry is reachable, skip this script and build with the default
# BASE_IMAGE=debian:bookworm-slim (see images/Dockerfile), which has python3 installed by
# the Dockerfile itself.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/common.sh"
log() { echo "[build-base] $*" >&2; }

if [ "${FORCE:-0}" != 1 ] && "$DOCKER" image inspect "$WATTSERVE_BASE_IMAGE" >/dev/null 2>&1; then
  log "$WATTSERVE_BASE_IMAGE exists ($("$DOCKER" image inspect -f '{{.Size}}' "$WATTSERVE_BASE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')); FORCE=1 rebuilds"
  exit 0
fi
[ "$(id -u)" = 0 ] || { log "debootstrap needs root"; exit 1; }
if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

SUITE="${DEBIAN_SUITE:-bookworm}"
if [ -z "${DEBIAN_MIRROR:-}" ]; then
  DEBIAN_MIRROR="$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | grep -oE 'https?://[^ ]+' | grep -v security | head -n1 || true)"
  DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
fi
PACKAGES="python3,python3-venv,ca-certificates,libgomp1"

t0=$(date +%s)
root="$(mktemp -d /var/tmp/wattserve-rootfs.XXXXXX)"
cleanup() { umount -l "$root/proc" 2>/dev/null || true; rm -rf --one-file-system "$root"; }
trap cleanup EXIT

log "debootstrap $SUITE (minbase + $PACKAGES) from $DEBIAN_MIRROR"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$DEBIAN_MIRROR" \
  >"$root.debootstrap.log" 2>&1 || { tail -n 30 "$root.debootstrap.log" >&2; exit 1; }
rm -f "$root.debootstrap.log"

# Security updates and the host's extra CAs.
cat >"$root/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR $SUITE main
deb $DEBIAN_MIRROR $SUITE-updates main
deb ${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security} $SUITE-security main
EOF
extra_ca="${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}"
if compgen -G "$extra_ca/*.crt" >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp "$extra_ca"/*.crt "$root/usr/local/share/ca-certificates/"
  log "added host CA certificates: $(cd "$extra_ca" && echo *.crt)"
fi
mount -t proc proc "$root/proc"
chroot "$root" /bin/sh -ec '
  export DEBIAN_FRONTEND=noninteractive
  update-ca-certificates >/dev/null
  (apt-get update -qq && apt-get upgrade -y -qq) >/dev/null 2>&1 || echo "(security updates skipped: mirror not reachable)"
  apt-get clean
'
umount "$root/proc"

# Trim what a container never needs.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/* \
  "$root"/tmp/* "$root"/usr/share/locale/*
find "$root"/usr/lib/python3* -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true
: >"$root/etc/machine-id"
printf 'path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
  >"$root/etc/dpkg/dpkg.cfg.d/01-wattserve-nodoc"

log "docker import -> $WATTSERVE_BASE_IMAGE"
tar -C "$root" --numeric-owner -c . | "$DOCKER" import \
  -c 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'CMD ["/bin/bash"]' \
  -m "debootstrap $SUITE minbase + $PACKAGES (wattserve scripts/docker/build-base.sh)" \
  - "$WATTSERVE_BASE_IMAGE" >/dev/null
log "built $WATTSERVE_BASE_IMAGE in $(( $(date +%s) - t0 ))s: $("$DOCKER" run --rm "$WATTSERVE_BASE_IMAGE" python3 --version), $("$DOCKER" image inspect -f '{{.Size}}' "$WATTSERVE_BASE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
