#!/bin/sh
# Run once per image flavour by images/Dockerfile (stage runtime-*): Python 3.11 + venv, the
# non-root user, the cache and results folders. Works on the local debootstrap base
# (scripts/docker/build-base.sh, python3 already there) and on a stock debian:bookworm-slim.
set -eu

if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' 2>/dev/null \
   || [ ! -e /etc/ssl/certs/ca-certificates.crt ] || ! ls /usr/lib/x86_64-linux-gnu/libgomp.so.1 /usr/lib/*/libgomp.so.1 >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates libgomp1 >/dev/null
  rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
fi
python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), "wattserve pins Python 3.11, the base has " + sys.version'

# The service never runs as root: uid/gid 10001, no login shell, no sudo.
groupadd --system --gid 10001 wattserve
useradd --system --uid 10001 --gid wattserve --home-dir /home/wattserve --create-home \
  --shell /usr/sbin/nologin wattserve
# /cache: model artifacts (a volume); /results: run folders (a bind mount). Owned by the user so a
# fresh named volume mounted there inherits the ownership.
mkdir -p /app /cache /results
chown wattserve:wattserve /cache /results

python3 -m venv /opt/venv
rm -rf /root/.cache
