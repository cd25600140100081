#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the study executor's tests (--executor slurm).
#
# From Debian's packages (slurmctld slurmd slurm-client munge; installed with apt-get when missing, as
# root). No systemd here: munged, slurmctld and slurmd are started by hand, their state and logs under
# $SLURM_STATE (default /var/tmp/wattserve-slurm). ProctrackType=proctrack/cgroup (cgroup v1 here):
# proctrack/linuxproc leaked a SIGTERM-trapping child in a trial. The node line comes from `slurmd -C`;
# KillWait is short so a cancelled job is gone in seconds. Idempotent: a running cluster is left as it
# is. Returns once `sinfo` shows the node idle. Stop it with scripts/slurm/stop-cluster.sh.
set -euo pipefail
STATE="${SLURM_STATE:-/var/tmp/wattserve-slurm}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
WAIT_S="${SLURM_START_TIMEOUT_S:-60}"
t0=$SECONDS

say() { echo "slurm: $*" >&2; }
die() { say "$*"; exit 1; }

if [ "$(id -u)" != 0 ]; then die "run as root (it installs packages and starts daemons)"; fi
missing=()
for b in slurmctld slurmd sinfo munged; do command -v "$b" >/dev/null || missing+=("$b"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null || {
      apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null; } || die "apt-get could not install the Slurm packages"
fi

node_idle() { sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; }
if pgrep -x slurmctld >/dev/null && pgrep -x slurmd >/dev/null && node_idle; then
  say "already running ($(sinfo -h -N -o '%N %T' | head -1))"
  exit 0
fi

# munge: the key Debian generated, or a fresh one
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
if [ ! -s /etc/munge/munge.key ]; then
  (command -v mungekey >/dev/null && mungekey --create --force) || \
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- munged || munged --force || die "munged did not start"
fi
munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"

mkdir -p "$STATE"/{ctld,spool,log}
host="$(hostname -s)"
node="$(slurmd -C | head -1 | sed -E "s/^NodeName=[^ ]+/NodeName=$host/; s/ ?UpTime=.*//")"
# leave a little memory to the OS so the node is never DRAINed for "low RealMemory"
mem="$(sed -nE 's/.*RealMemory=([0-9]+).*/\1/p' <<<"$node")"
node="$(sed -E "s/RealMemory=[0-9]+/RealMemory=$((mem * 9 / 10))/" <<<"$node")"
mkdir -p "$CONF_DIR"
cat > "$CONF.new" <<CONF
# written by wattserve scripts/slurm/start-cluster.sh (one-node test cluster)
ClusterName=wattserve
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/cgroup
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
KillWait=3
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MpiDefault=none
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=EXCLUSIVE
CONF
mv "$CONF.new" "$CONF"
cat > "$CONF_DIR/cgroup.conf" <<CONF
# written by wattserve scripts/slurm/start-cluster.sh (cgroup v1 on this machine)
CgroupPlugin=cgroup/v1
CgroupAutomount=yes
ConstrainCores=no
ConstrainRAMSpace=no
CONF

pgrep -x slurmctld >/dev/null || slurmctld -i || die "slurmctld did not start; see $STATE/log/slurmctld.log"
pgrep -x slurmd >/dev/null || slurmd || die "slurmd did not start; see $STATE/log/slurmd.log"
deadline=$((SECONDS + WAIT_S))
until node_idle; do
  if [ $SECONDS -ge $deadline ]; then
    sinfo -N -l >&2 || true; tail -5 "$STATE"/log/*.log >&2 || true
    die "the node did not become idle in ${WAIT_S} s"
  fi
  if sinfo -h -N -o '%T' 2>/dev/null | grep -qE 'drain|down'; then scontrol update nodename="$host" state=resume 2>/dev/null || true; fi
  sleep 0.5
done
say "up in $((SECONDS - t0)) s: $(sinfo -h -N -o '%N %T %c CPUs %m MB')"
