#!/usr/bin/env bash
# Start a throwaway single-node SLURM on this machine (Debian, as root) for testing the SLURM profile.
#
#   sudo scripts/slurm/start_slurm.sh        # installs slurm-wlm + munge if missing, starts the daemons
#   sudo scripts/slurm/stop_slurm.sh         # stops exactly the daemons this script started
#
# What it does:
#   - apt-get installs slurm-wlm and munge when slurmctld/munged are missing;
#   - creates a munge key when there is none;
#   - writes /etc/slurm/slurm.conf for this host (its name, CPUs and memory as `slurmd -C` reports them) with two
#     partitions on the one node: `cpu` (default) and `gpu` (no GRES: GPU rules are only *routed* there, see
#     profiles/slurm-ci). proctrack/linuxproc + task/none (no cgroups in containers), no accounting database
#     (so no sacct: the profile must use `slurm-status-command: squeue` and `slurm-no-account: true`),
#     MinJobAge=600 (finished jobs stay visible to squeue long enough for Snakemake's status checks) and a
#     1-second scheduler interval;
#   - starts munged, slurmctld and slurmd, records their PIDs in $STATE/pids/, waits until the node is idle.
# The jobstep's inner `srun` reads /etc/slurm/slurm.conf (the plugin drops SLURM_CONF), so the default path is
# used. An existing slurm.conf not written by this script is kept as slurm.conf.repshift-backup and restored
# by stop_slurm.sh. If a SLURM controller already answers, nothing is started or rewritten.
#
# Environment: REPSHIFT_SLURM_STATE (default /tmp/repshift-slurm): spool dirs, logs, PID files.
set -euo pipefail

STATE=${REPSHIFT_SLURM_STATE:-/tmp/repshift-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by repshift scripts/slurm/start_slurm.sh"

log() { echo "[start_slurm] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages, writes $CONF and starts daemons)"

if command -v scontrol >/dev/null && [[ -f $CONF ]] && timeout 5 scontrol ping 2>/dev/null | grep -q "is UP"; then
    log "a SLURM controller already answers; using it as is (nothing started)"
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm slurm-client munge >/dev/null
fi

mkdir -p "$STATE"/{pids,log,slurmctld,slurmd}

# --- munge ----------------------------------------------------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge
install -d -o munge -g munge -m 0711 /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating a munge key"
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running; using it"
else
    rm -f /run/munge/munged.pid
    # munged refuses to run as root; run it as the munge user (daemonizes, writes its pidfile)
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do [[ -s /run/munge/munged.pid ]] && break; sleep 0.1; done
    cp /run/munge/munged.pid "$STATE/pids/munged.pid"
    munge -n | unmunge >/dev/null || die "munged did not start"
    log "munged pid $(cat "$STATE/pids/munged.pid")"
fi

# --- slurm.conf -----------------------------------------------------------------------------------
HOST=$(hostname -s)
# e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
NODE_LINE=$(slurmd -C | head -n1)
[[ $NODE_LINE == NodeName=* ]] || die "unexpected 'slurmd -C' output: $NODE_LINE"
NODE_LINE=$(sed -E "s/^NodeName=[^ ]+/NodeName=$HOST/" <<<"$NODE_LINE")

if [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
    log "keeping the existing $CONF as $CONF.repshift-backup"
    mv "$CONF" "$CONF.repshift-backup"
fi
mkdir -p /etc/slurm
cat >"$CONF" <<EOF
$MARK
# Throwaway single-node cluster for repshift's SLURM test; stop_slurm.sh stops it.
ClusterName=repshift
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=$STATE/pids/slurmctld.pid
SlurmdPidFile=$STATE/pids/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1,sched_min_interval=100000
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
KillWait=5
InactiveLimit=0
Waittime=0
SlurmdTimeout=60
$NODE_LINE State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST Default=NO MaxTime=INFINITE State=UP
EOF
log "wrote $CONF ($NODE_LINE)"

# --- daemons --------------------------------------------------------------------------------------
# A fresh cluster each time: -c clears the saved jobs and node states (without it, jobs of an earlier, interrupted
# test are restarted and keep the node allocated), -i ignores unreadable state files, and slurmd's spool (its
# record of running job steps) is emptied. Both daemonize and write the pidfiles named above.
rm -f "$STATE/pids/slurmctld.pid" "$STATE/pids/slurmd.pid"
rm -rf "${STATE:?}/slurmd" && mkdir -p "$STATE/slurmd"
/usr/sbin/slurmctld -c -i
for _ in $(seq 100); do [[ -s $STATE/pids/slurmctld.pid ]] && break; sleep 0.1; done
[[ -s $STATE/pids/slurmctld.pid ]] || die "slurmctld did not start; see $STATE/log/slurmctld.log"
log "slurmctld pid $(cat "$STATE/pids/slurmctld.pid")"
/usr/sbin/slurmd
for _ in $(seq 100); do [[ -s $STATE/pids/slurmd.pid ]] && break; sleep 0.1; done
[[ -s $STATE/pids/slurmd.pid ]] || die "slurmd did not start; see $STATE/log/slurmd.log"
log "slurmd pid $(cat "$STATE/pids/slurmd.pid")"

for _ in $(seq 60); do
    state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n1 || true)
    [[ $state == idle ]] && break
    [[ $state == drain* || $state == down* ]] && scontrol update nodename="$HOST" state=resume 2>/dev/null || true
    sleep 1
done
[[ $state == idle ]] || die "node $HOST is '$state', not idle; see $STATE/log/"
log "node $HOST idle; partitions: $(sinfo -h -o '%P' | tr '\n' ' ')"
