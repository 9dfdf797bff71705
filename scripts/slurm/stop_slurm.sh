#!/usr/bin/env bash
# Stop the daemons scripts/slurm/start_slurm.sh started (by their recorded PIDs, nothing else) and restore a
# slurm.conf it had set aside. Safe to run twice; a no-op when start_slurm.sh started nothing.
set -uo pipefail

STATE=${REPSHIFT_SLURM_STATE:-/tmp/repshift-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by repshift scripts/slurm/start_slurm.sh"

log() { echo "[stop_slurm] $*" >&2; }

# Is PID alive and running the program we expect (guards against a recycled PID)?
is_ours() { [[ -r /proc/$1/comm ]] && grep -q "$2" "/proc/$1/comm"; }

stop_pid() { # name pidfile comm-pattern
    local name=$1 pidfile=$2 pat=$3 pid
    [[ -s $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if [[ $pid =~ ^[0-9]+$ ]] && is_ours "$pid" "$pat"; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do is_ours "$pid" "$pat" || break; sleep 0.1; done
        if is_ours "$pid" "$pat"; then
            log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    rm -f "$pidfile"
}

if [[ -d $STATE/pids ]]; then
    # Jobs still running on our node would be orphaned by stopping slurmd: cancel them while the controller lives.
    if [[ -s $STATE/pids/slurmctld.pid ]] && command -v scancel >/dev/null; then
        timeout 10 scancel --partition=cpu,gpu --full 2>/dev/null || true
    fi
    stop_pid slurmd "$STATE/pids/slurmd.pid" slurmd
    stop_pid slurmctld "$STATE/pids/slurmctld.pid" slurmctld
    stop_pid munged "$STATE/pids/munged.pid" munged
fi

if [[ -f $CONF.repshift-backup ]] && grep -qF "$MARK" "$CONF" 2>/dev/null; then
    log "restoring the original $CONF"
    mv "$CONF.repshift-backup" "$CONF"
fi
exit 0
