#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for tests and CI: `tools/local_slurm.sh start|stop|status`.
#
# Needs Debian's slurm-wlm and munge (`apt-get install -y slurm-wlm munge`) and root: slurmctld and slurmd
# run as root (SlurmUser=root), with no cgroups (ProctrackType=proctrack/linuxproc, TaskPlugin=task/none), so
# it works inside a container. The node has this machine's CPUs and memory (`slurmd -C`), one partition
# (`debug`, the default). There is no accounting database: `sacct` does not work, so job states come from
# `squeue` / `scontrol show job` (odise-pl's slurm launcher reads them so).
#
# start is idempotent: a running cluster is left as it is; it waits until `sinfo` shows the node idle.
# The configuration is /etc/slurm/slurm.conf (written by this script; a slurm.conf it did not write is
# never replaced). State and logs: /var/lib/odise-local-slurm (override with LOCAL_SLURM_DIR).
set -euo pipefail

STATE_DIR="${LOCAL_SLURM_DIR:-/var/lib/odise-local-slurm}"
CONF=/etc/slurm/slurm.conf
MARKER="# written by odise-pl tools/local_slurm.sh"
CONF_CHANGED=0

die() { echo "local_slurm.sh: $*" >&2; exit 1; }

need_tools() {
    for tool in slurmctld slurmd munged sinfo; do
        command -v "$tool" >/dev/null || die "'$tool' not found: install SLURM first (apt-get install -y slurm-wlm munge)"
    done
    [ "$(id -u)" -eq 0 ] || die "run as root (slurmctld and slurmd run as SlurmUser=root)"
}

write_conf() {
    if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script; not replacing it (move it away to use the local cluster)"
    fi
    local node host
    host="$(hostname -s)"
    # NodeName=... CPUs=... RealMemory=... as slurmd sees this machine (first line of slurmd -C)
    node="$(slurmd -C | head -n 1)"
    node="${node/NodeName=* CPUs=/NodeName=$host CPUs=}"
    mkdir -p "$STATE_DIR/ctld" "$STATE_DIR/d" "$(dirname "$CONF")"
    cat >"$CONF.tmp" <<EOF
$MARKER
ClusterName=odise-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job may start again after the credential lifetime: 120 s by default, 20 s here
AuthInfo=cred_expire=20
CredType=cred/munge
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/d
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerParameters=sched_interval=1
# a job's state stays visible to squeue/scontrol for 10 minutes after it ends
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    sync "$CONF.tmp" 2>/dev/null || true
    if cmp -s "$CONF.tmp" "$CONF"; then
        rm -f "$CONF.tmp"
        CONF_CHANGED=0
    else
        mv -f "$CONF.tmp" "$CONF"
        CONF_CHANGED=1
    fi
}

start_munge() {
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        fi
    fi
    chown root:root /etc/munge/munge.key 2>/dev/null || true
    chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    if ! munge -n </dev/null >/dev/null 2>&1; then
        munged --force
        for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && return 0; sleep 0.1; done
        die "munged did not start (see /var/log/munge/munged.log)"
    fi
}

running() { pgrep -x "$1" >/dev/null 2>&1; }

node_state() { sinfo -h -N -o '%T' 2>/dev/null | head -n 1; }

start() {
    need_tools
    write_conf
    start_munge
    if running slurmctld && running slurmd && [ "$CONF_CHANGED" = 1 ]; then
        scontrol reconfigure  # a cluster started with an older configuration takes the new one
    fi
    running slurmctld || slurmctld
    running slurmd || slurmd
    local state=""
    for _ in $(seq 120); do
        state="$(node_state)"
        case "$state" in
            idle|mixed|allocated) echo "local SLURM is up: node $(hostname -s) $state (partition debug)"; return 0 ;;
            down*|drain*) scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    die "the node did not become idle (sinfo says '${state:-nothing}'); see $STATE_DIR/slurmctld.log and slurmd.log"
}

stop() {
    local pid
    for daemon in slurmd slurmctld; do
        pid="$(cat "$STATE_DIR/$daemon.pid" 2>/dev/null || true)"
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
    done
    echo "local SLURM stopped (munged left running)"
}

status() {
    if running slurmctld && running slurmd && [ -n "$(node_state)" ]; then
        sinfo
        return 0
    fi
    echo "local SLURM is not running (tools/local_slurm.sh start)"
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
