#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, to try `snakemake --profile profiles/slurm` without one.
#
#   profiles/slurm/local-cluster.sh start   # install (Debian packages), configure and start; idempotent
#   profiles/slurm/local-cluster.sh status  # sinfo
#   profiles/slurm/local-cluster.sh stop    # stop the daemons (by their pid files); their slurm.conf aside
#
# Needs root and Debian's package registry. It runs munged (as user munge), slurmctld and slurmd, without
# systemd and without accounting storage: check job status with squeue (MinJobAge=600 keeps finished jobs
# visible), i.e. add `--slurm-status-command squeue` to the snakemake command. The node offers one fake GPU
# (a GRES whose device file is a copy of /dev/null), so rules that declare `gpu` resources get scheduled.
# Memory is enforced as on a real cluster: a job step using more than its --mem (the rule's mem_mb) is killed
# (OUT_OF_MEMORY), polled every second. `start` on a running cluster whose slurm.conf differs from this
# script's rewrites it and restarts the daemons (running jobs survive a restart).
set -euo pipefail

STATE=${SLURM_LOCAL_STATE:-/var/tmp/i2i-slurm}
CONF=/etc/slurm/slurm.conf

install_packages() {
    if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
        || ! command -v sbatch >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
    fi
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
    chmod 700 /etc/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    chmod 400 /etc/munge/munge.key
    running /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged
}

render_config() {
    local host node
    host=$(hostname -s)
    node=$(slurmd -C | head -n 1)  # NodeName=... CPUs=... RealMemory=... as this machine has them
    cat <<CONF
# written by profiles/slurm/local-cluster.sh: a one-node test cluster
ClusterName=i2i-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherParams=OverMemoryKill,UsePss
JobAcctGatherFrequency=task=1
SchedulerType=sched/backfill
$node Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
}

write_config() {
    mkdir -p "$STATE/ctld" "$STATE/spool" "$STATE/log" /etc/slurm
    [ -c "$STATE/gpu0" ] || mknod "$STATE/gpu0" c 1 3  # identical to /dev/null: a device file for the fake GPU
    render_config > "$CONF"
    echo "Name=gpu File=$STATE/gpu0" > /etc/slurm/gres.conf
}

start() {
    [ "$(id -u)" = 0 ] || { echo "local-cluster.sh: needs root" >&2; exit 1; }
    install_packages
    start_munge
    if running "$STATE/slurmctld.pid" && running "$STATE/slurmd.pid" && [ "$(render_config)" != "$(cat "$CONF")" ]; then
        echo "local-cluster.sh: $CONF is out of date: rewriting it and restarting the daemons" >&2
        stop_daemons
    fi
    if ! running "$STATE/slurmctld.pid" || ! running "$STATE/slurmd.pid"; then
        write_config
        running "$STATE/slurmctld.pid" || slurmctld
        running "$STATE/slurmd.pid" || slurmd
    fi
    for _ in $(seq 60); do
        if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            sinfo
            return 0
        fi
        sleep 1
    done
    echo "local-cluster.sh: the node did not come up; see $STATE/log/" >&2
    sinfo -R >&2 || true
    exit 1
}

stop_pids() {
    local pid
    for pid in "$@"; do
        if running "$pid"; then
            kill "$(cat "$pid")"
        fi
    done
    for pid in "$@"; do  # until they are gone, so that a start right after finds none
        for _ in $(seq 50); do running "$pid" || break; sleep 0.2; done
    done
}

stop_daemons() { stop_pids "$STATE/slurmd.pid" "$STATE/slurmctld.pid"; }

# The configuration goes aside with the daemons: while it names a controller that is down, every SLURM client
# call (and so every `snakemake` start, whose SLURM plugin asks `scontrol show config`) waits ~9 s for it.
stop() {
    stop_pids "$STATE/slurmd.pid" "$STATE/slurmctld.pid" /run/munge/munged.pid
    if [ -f "$CONF" ]; then mv "$CONF" "$STATE/slurm.conf.stopped"; fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|status|stop" >&2; exit 2 ;;
esac
