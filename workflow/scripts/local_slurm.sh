#!/usr/bin/env bash
# A one-node SLURM cluster on localhost, to run the workflow's SLURM profile for real
# (tests/test_slurm.py does; so can you, to try a profile before a real cluster sees it).
#
#   bash workflow/scripts/local_slurm.sh up   [DIR]   # install if needed, configure, start, wait for idle
#   bash workflow/scripts/local_slurm.sh down [DIR]   # cancel its jobs, stop what `up` started
#
# DIR (default /tmp/arca-slurm) holds the cluster's state, logs and pid files. The configuration
# goes where every SLURM command looks for it, /etc/slurm/slurm.conf: the executor plugin's job
# step drops SLURM_* variables (SLURM_CONF included) before it calls srun, so a private path would
# not reach it. `up` refuses to overwrite a slurm.conf it did not write; `down` removes its own.
# The node is this machine (its cores and memory as `slurmd -C` reports them) in one default
# partition, `debug`. There is no accounting database: sacct then answers "Slurm accounting
# storage is disabled", so Snakemake must read job states with squeue
# (--slurm-status-command squeue; the plugin keeps that choice while MinJobAge, 3600 s here, is at
# least 3 x --slurm-init-seconds-before-status-checks).
#
# Installing needs root and apt-get (Debian/Ubuntu packages slurmctld, slurmd, slurm-client,
# munge). When SLURM cannot be installed or set up here, `up` exits with status 3 and says why on
# stderr, so that a caller can skip instead of fail; any other failure exits 1 and shows the
# daemons' logs. Only localhost is touched: the daemons listen on ports 6817/6818 of this machine.
set -euo pipefail

CANNOT_SET_UP=3
cmd=${1:-}
DIR=${2:-/tmp/arca-slurm}
PACKAGES=(slurmctld slurmd slurm-client munge)
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
MUNGE_PID=/run/munge/arca-munged.pid
MUNGE_LOG=/run/munge/arca-munged.log
MARK="# Written by workflow/scripts/local_slurm.sh"

die() { echo "local_slurm: $*" >&2; exit 1; }
cannot_set_up() { echo "local_slurm: cannot set up SLURM here: $*" >&2; exit "$CANNOT_SET_UP"; }

installed() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null
}

install_slurm() {
    installed && return 0
    command -v apt-get >/dev/null || cannot_set_up "no apt-get to install ${PACKAGES[*]} with"
    echo "local_slurm: installing ${PACKAGES[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    # A stale package list may not know the packages: refresh it (a failure shows up below).
    apt-get update -qq >"$DIR/apt.log" 2>&1 || true
    if ! apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >>"$DIR/apt.log" 2>&1; then
        tail -20 "$DIR/apt.log" >&2
        cannot_set_up "apt-get install ${PACKAGES[*]} failed (log above, all of it in $DIR/apt.log)"
    fi
    installed || cannot_set_up "apt-get installed ${PACKAGES[*]}, but the daemons are not on PATH"
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

munge_answers() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    # Reuse a munged that already answers (a host with munge running); else start one as the munge
    # user, with the key the Debian package generated. Its files go to /run/munge (DIR may sit
    # below a folder the munge user cannot enter); DIR/munged.pid tells `down` what to stop.
    munge_answers && return 0
    [ -s /etc/munge/munge.key ] || die "no /etc/munge/munge.key (the munge package creates it)"
    install -d -o munge -g munge -m 0755 /run/munge
    rm -f "$MUNGE_PID"
    runuser -u munge -- munged --pid-file="$MUNGE_PID" --log-file="$MUNGE_LOG" \
        || die "munged did not start: $(tail -5 "$MUNGE_LOG" 2>/dev/null)"
    cp "$MUNGE_PID" "$DIR/munged.pid"
    for _ in $(seq 50); do
        munge_answers && return 0
        sleep 0.1
    done
    die "munged started but does not answer"
}

write_conf() {
    local host node cpus
    host=$(hostname -s)
    # `slurmd -C` prints this machine's node line: NodeName, CPUs, sockets, cores, RealMemory (MB).
    node=$(slurmd -C | head -1)
    [[ "$node" == NodeName=* && "$node" == *RealMemory=* ]] || die "unexpected 'slurmd -C' output: $node"
    cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node")
    mkdir -p "$DIR/state" "$DIR/spool" /etc/slurm
    cat >"$CONF.tmp" <<EOF
$MARK for $DIR: one node (this machine), one partition, localhost only.
ClusterName=arca-local
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
# No cgroups: containers and CI runners often cannot create them.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# Stand-in GPUs (empty files, one per core, in DIR/gpus): jobs asking --gpus=N are scheduled as on
# a GPU node, so the workflow's gpu=1 requests are accepted and granted, but no job gets a GPU.
GresTypes=gpu
# Finished jobs stay visible to squeue and scontrol for an hour: the plugin's squeue status check
# needs them there, and so does a test that reads every job's final state back.
MinJobAge=3600
# scancel sends SIGTERM, then SIGKILL 5 s later.
KillWait=5
$node Gres=gpu:$cpus NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    # SLURM ignores a GPU without a File=, and only checks that the file exists.
    mkdir -p "$DIR/gpus"
    for ((i = 0; i < cpus; i++)); do : >"$DIR/gpus/gpu$i"; done
    printf '%s\nNodeName=%s Name=gpu File=%s/gpus/gpu[0-%s]\n' "$MARK for $DIR:" "$host" "$DIR" "$((cpus - 1))" >"$GRES_CONF"
    mv "$CONF.tmp" "$CONF"
}

show_logs() {
    for f in "$DIR/slurmctld.log" "$DIR/slurmd.log" "$MUNGE_LOG"; do
        if [ -f "$f" ]; then echo "--- $f (last 20 lines)"; tail -20 "$f"; fi
    done >&2
}

up() {
    # Starting the daemons and writing /etc/slurm need root, installed packages or not.
    [ "$(id -u)" = 0 ] || cannot_set_up "not root (uid $(id -u)): slurmctld, slurmd and /etc/slurm/slurm.conf need root"
    mkdir -p "$DIR"
    install_slurm
    if pid_alive "$DIR/slurmctld.pid" || pid_alive "$DIR/slurmd.pid"; then
        die "the cluster of $DIR is already running; run 'down' first"
    fi
    local f
    for f in "$CONF" "$GRES_CONF"; do
        if [ -f "$f" ] && ! head -1 "$f" | grep -qF "$MARK"; then
            cannot_set_up "$f exists and was not written by this script (a real cluster's?); leaving it alone"
        fi
    done
    if [ -n "$(ss -Hltn 'sport = :6817 or sport = :6818' 2>/dev/null)" ]; then
        die "ports 6817/6818 are in use: another slurmctld or slurmd runs on this machine"
    fi
    start_munge
    write_conf
    # -c: start from a clean state (no jobs or node states from an earlier run).
    slurmctld -c || { show_logs; die "slurmctld did not start"; }
    slurmd || { show_logs; die "slurmd did not start"; }
    local state=""
    for _ in $(seq 120); do
        state=$(sinfo -h -N -o %T 2>/dev/null | head -1)
        [ "$state" = idle ] && break
        sleep 0.5
    done
    if [ "$state" != idle ]; then
        show_logs
        die "the node is '${state:-not reported}' after 60 s, not idle"
    fi
    sinfo -N -o "%N %P %T %c %m" >&2
}

stop_pidfile() {
    local file=$1 pid
    if ! pid_alive "$file"; then rm -f "$file"; return 0; fi
    pid=$(cat "$file")
    kill "$pid"
    for _ in $(seq 50); do
        if ! kill -0 "$pid" 2>/dev/null; then rm -f "$file"; return 0; fi
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$file"
}

down() {
    if pid_alive "$DIR/slurmctld.pid"; then
        # Jobs end before slurmd goes, so no slurmstepd or job process outlives the cluster.
        scancel --partition=debug 2>/dev/null || true
        for _ in $(seq 60); do
            [ -z "$(squeue -h -t PENDING,CONFIGURING,RUNNING,COMPLETING -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    stop_pidfile "$DIR/slurmd.pid"
    stop_pidfile "$DIR/slurmctld.pid"
    stop_pidfile "$DIR/munged.pid"   # there only when `up` started munged
    local f
    for f in "$CONF" "$GRES_CONF"; do
        if [ -f "$f" ] && head -1 "$f" | grep -qF "$MARK for $DIR:"; then rm -f "$f"; fi
    done
    echo "local_slurm: the cluster of $DIR is down" >&2
}

case "$cmd" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down [DIR]" >&2; exit 2 ;;
esac
