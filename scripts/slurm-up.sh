#!/usr/bin/env bash
# Start a private single-node SLURM cluster whose every file lives in STATE_DIR.
#
#   scripts/slurm-up.sh STATE_DIR     # prints: export SLURM_CONF=STATE_DIR/slurm.conf
#   eval "$(scripts/slurm-up.sh /tmp/slurm)"; sbatch --wrap true
#   scripts/slurm-down.sh STATE_DIR   # stops exactly the daemons started here
#
# It is for tests and demos on one machine, as root, without cgroup delegation:
# munged runs as the munge user on its own socket and key, slurmctld and slurmd
# as root with proctrack/linuxproc, no accounting, and jobcomp/filetxt writing
# one completion record per job to STATE_DIR/jobcomp.txt. Installs slurm-wlm and
# munge with apt-get if they are missing. Running it again while the cluster is
# up changes nothing; after a crash it stops what is left and starts afresh.
# Progress goes to stderr; stdout carries only the export line.
set -euo pipefail

PROG=slurm-up
WAIT_S=60  # bound on waiting for the node to become idle
say() { echo "$PROG: $*" >&2; }
die() { echo "$PROG: error: $*" >&2; exit 1; }

if [ $# -ne 1 ] || [ -z "$1" ]; then echo "usage: $0 STATE_DIR" >&2; exit 2; fi
[ "$(id -u)" -eq 0 ] || die "must run as root (slurmd starts jobs as their submitter and munged as the munge user)"

STATE=$(realpath -m -- "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
CONF=$STATE/slurm.conf
PIDS=$STATE/pids
MUNGE=$STATE/munge
export SLURM_CONF=$CONF

# ----- packages ------------------------------------------------------------------
install_packages() {
    local missing=""
    for exe in munged slurmctld slurmd sbatch; do
        command -v "$exe" >/dev/null 2>&1 || [ -x "/usr/sbin/$exe" ] || missing="$missing $exe"
    done
    [ -z "$missing" ] && return 0
    command -v apt-get >/dev/null || die "missing$missing and no apt-get to install slurm-wlm and munge"
    say "installing slurm-wlm and munge (missing:$missing)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$STATE/apt.log" 2>&1 || die "apt-get update failed; see $STATE/apt.log"
    apt-get install -y -qq slurm-wlm munge >>"$STATE/apt.log" 2>&1 || die "apt-get install slurm-wlm munge failed; see $STATE/apt.log"
}

# ----- pids ----------------------------------------------------------------------
# A pid is recorded with its start time (field 22 of /proc/PID/stat), so a pid
# reused by an unrelated process is never mistaken for one of ours.
start_time() { awk '{sub(/^.*\) /, ""); print $20}' "/proc/$1/stat" 2>/dev/null; }
ours_alive() { [ -n "$2" ] && [ "$(start_time "$1")" = "$2" ]; }

all_recorded_alive() {
    [ -s "$PIDS" ] || return 1
    local _name pid started n=0
    while read -r _name pid started; do
        ours_alive "$pid" "$started" || return 1
        n=$((n + 1))
    done <"$PIDS"
    [ "$n" -eq 3 ]
}

record_pid() {  # NAME PIDFILE
    local pid=""
    for _ in $(seq 50); do
        pid=$(cat "$2" 2>/dev/null || true)
        [ -n "$pid" ] && [ -d "/proc/$pid" ] && break
        sleep 0.1
    done
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    echo "$1 $pid $(start_time "$pid")" >>"$PIDS"
}

# ----- free TCP ports ------------------------------------------------------------
listening_ports() {
    # st 0A = LISTEN; the port is the hex after the last colon of the local address.
    local _sl local_addr _rem st _rest
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | while read -r _sl local_addr _rem st _rest; do
        [ "$st" = "0A" ] && echo $((16#${local_addr##*:}))
    done
}

free_port() {  # EXCLUDE
    local used port
    used=$(listening_ports | sort -u)
    for port in $(seq 16817 2 17817); do
        [ "$port" = "${1:-}" ] && continue
        grep -qx "$port" <<<"$used" || { echo "$port"; return 0; }
    done
    die "no free TCP port in 16817-17817"
}

# ----- munge ---------------------------------------------------------------------
start_munge() {
    id munge >/dev/null 2>&1 || die "user 'munge' does not exist (is the munge package installed?)"
    mkdir -p "$MUNGE"
    chown munge:munge "$MUNGE"
    chmod 0755 "$MUNGE"  # clients need to reach the socket; munged refuses writable dirs
    runuser -u munge -- test -x "$MUNGE" ||
        die "the munge user cannot reach $MUNGE: a parent directory is not world-searchable (use a STATE_DIR under /tmp)"
    if [ ! -s "$MUNGE/munge.key" ]; then
        dd if=/dev/urandom of="$MUNGE/munge.key" bs=1024 count=1 status=none
    fi
    chown munge:munge "$MUNGE/munge.key"
    chmod 0400 "$MUNGE/munge.key"
    rm -f "$MUNGE/munged.pid" "$MUNGE/munge.socket" "$MUNGE/munge.socket.lock"
    runuser -u munge -- /usr/sbin/munged --key-file="$MUNGE/munge.key" --socket="$MUNGE/munge.socket" \
        --pid-file="$MUNGE/munged.pid" --log-file="$MUNGE/munged.log" --seed-file="$MUNGE/munged.seed" ||
        die "munged did not start; see $MUNGE/munged.log"
    record_pid munged "$MUNGE/munged.pid" || die "munged did not write $MUNGE/munged.pid; see $MUNGE/munged.log"
    for _ in $(seq 50); do
        munge -n -S "$MUNGE/munge.socket" 2>/dev/null | unmunge -S "$MUNGE/munge.socket" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munged does not answer on $MUNGE/munge.socket; see $MUNGE/munged.log"
}

# ----- slurm ---------------------------------------------------------------------
write_conf() {
    local node ctld_port slurmd_port
    node=$(hostname -s)
    ctld_port=$(free_port)
    slurmd_port=$(free_port "$ctld_port")
    mkdir -p "$STATE/ctld" "$STATE/slurmd" "$STATE/log"
    cat >"$CONF" <<EOF
# Written by scripts/slurm-up.sh; rewritten on every start.
ClusterName=expwatch
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE/munge.socket
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd/%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroup delegation here: track processes by parentage, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/jobcomp.txt
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
PropagateResourceLimits=NONE
ReturnToService=2
# Tests run more jobs at once than the machine has cores; the CPU count is
# declared, not probed (config_overrides), and each job takes one of them.
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Fast turnaround: schedule at submit and every second, forget finished jobs
# after 10 s (their records stay in the jobcomp file), escalate kills quickly,
# and end a job the moment its time limit is reached.
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1,sched_min_interval=100000,batch_sched_delay=0
MinJobAge=10
KillWait=2
OverTimeLimit=0
InactiveLimit=0
Waittime=0
MessageTimeout=10
SlurmdTimeout=30
SlurmctldTimeout=30
NodeName=$node NodeAddr=127.0.0.1 CPUs=16 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE DefaultTime=INFINITE State=UP
EOF
}

start_slurm() {
    rm -f "$STATE/slurmctld.pid" "$STATE/slurmd.pid"
    /usr/sbin/slurmctld -f "$CONF" >>"$STATE/log/start.log" 2>&1 ||
        die "slurmctld did not start; see $STATE/log/slurmctld.log and $STATE/log/start.log"
    record_pid slurmctld "$STATE/slurmctld.pid" || die "slurmctld exited at once; see $STATE/log/slurmctld.log"
    /usr/sbin/slurmd -f "$CONF" >>"$STATE/log/start.log" 2>&1 ||
        die "slurmd did not start; see $STATE/log/slurmd.log and $STATE/log/start.log"
    record_pid slurmd "$STATE/slurmd.pid" || die "slurmd exited at once; see $STATE/log/slurmd.log"
}

wait_idle() {  # [SLURMD_SINCE]: also require that slurmd registered at or after this epoch
    local node state="" started since=${1:-0} deadline=$((SECONDS + WAIT_S))
    node=$(hostname -s)
    while [ $SECONDS -lt $deadline ]; do
        # A restarted controller restores the node as idle before slurmd has
        # registered, so the state alone can lie; slurmd's start time cannot.
        started=$(scontrol -o show node "$node" 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2 || true)
        if [ -n "$started" ] && [ "$started" != None ] && [ "$(date -d "$started" +%s)" -ge "$since" ]; then
            state=$(sinfo -h -n "$node" -o %T 2>/dev/null | head -n1 || true)
            case "$state" in
                idle | mixed | allocated) return 0 ;;
                drain* | down | fail*) scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;;
            esac
        fi
        sleep 0.2
    done
    die "node $node is '${state:-not registered}' after ${WAIT_S}s, not idle; see $STATE/log/slurmctld.log and slurmd.log"
}

# ----- main ----------------------------------------------------------------------
mkdir -p "$STATE"
chmod 0755 "$STATE"
install_packages

if all_recorded_alive && sinfo -h >/dev/null 2>&1; then
    say "already up in $STATE"
else
    if [ -s "$PIDS" ]; then
        say "previous start in $STATE is incomplete; stopping what is left of it"
        "$HERE/slurm-down.sh" "$STATE" >&2
    fi
    : >"$PIDS"
    since=$(date +%s)
    start_munge
    write_conf
    start_slurm
    say "started munged, slurmctld and slurmd (pids in $PIDS)"
fi
wait_idle "${since:-0}"
say "node $(hostname -s) is idle; jobs' end records go to $STATE/jobcomp.txt"
echo "export SLURM_CONF=$CONF"
