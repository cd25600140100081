#!/usr/bin/env bash
# Stop the one-node cluster of scripts/slurm/start-cluster.sh: cancel every job, then slurmd,
# slurmctld and munged (each by its own pid, waiting until it is gone). Nothing running: nothing to do.
set -uo pipefail
STATE="${SLURM_STATE:-/var/tmp/wattserve-slurm}"
command -v scancel >/dev/null && pgrep -x slurmctld >/dev/null && scancel --full --quiet -u "$(id -un)" 2>/dev/null
stop() {  # name pidfile
  local pid
  pid="$( [ -s "$2" ] && cat "$2" || pgrep -x "$1" | head -1)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  echo "slurm: $1 ($pid) ignored SIGTERM for 10 s; SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
}
stop slurmd "$STATE/slurmd.pid"
stop slurmctld "$STATE/slurmctld.pid"
stop munged /run/munge/munged.pid
echo "slurm: stopped" >&2
