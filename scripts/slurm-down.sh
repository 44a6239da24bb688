#!/usr/bin/env bash
# Stop the cluster scripts/slurm-up.sh started in STATE_DIR: cancel its jobs,
# then stop exactly the recorded pids (slurmd, slurmctld, munged). Safe to run
# twice, or on a STATE_DIR whose daemons already died.
set -euo pipefail

PROG=slurm-down
say() { echo "$PROG: $*" >&2; }
die() { echo "$PROG: error: $*" >&2; exit 1; }

if [ $# -ne 1 ] || [ -z "$1" ]; then echo "usage: $0 STATE_DIR" >&2; exit 2; fi
STATE=$(realpath -m -- "$1")
PIDS=$STATE/pids
export SLURM_CONF=$STATE/slurm.conf

if [ ! -s "$PIDS" ]; then
    say "nothing recorded in $PIDS; nothing to stop"
    exit 0
fi

start_time() { awk '{sub(/^.*\) /, ""); print $20}' "/proc/$1/stat" 2>/dev/null; }
ours_alive() { [ -n "$2" ] && [ "$(start_time "$1")" = "$2" ]; }

# Jobs outlive slurmd (each runs under its own slurmstepd), so end them first
# while the controller can still do it; bounded, the daemons stop regardless.
if [ -f "$SLURM_CONF" ] && timeout 10 squeue -h >/dev/null 2>&1; then
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | tr '\n' ' ' || true)
    if [ -n "${jobs// /}" ]; then
        say "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs >/dev/null 2>&1 || true
        for _ in $(seq 150); do  # squeue lists pending, running and completing jobs
            [ -z "$(timeout 5 squeue -h -o %A 2>/dev/null || true)" ] && break
            sleep 0.1
        done
    fi
fi

# Each daemon takes about 2 s to shut down; signal all, then wait for all.
declare -a names pids starts
while read -r name pid started; do
    if ours_alive "$pid" "$started"; then
        kill -TERM "$pid" 2>/dev/null || true
        names+=("$name") pids+=("$pid") starts+=("$started")
    else
        say "$name (pid $pid) already gone"
    fi
done <"$PIDS"

stopped=""
for i in "${!pids[@]}"; do
    for _ in $(seq 100); do
        ours_alive "${pids[$i]}" "${starts[$i]}" || break
        sleep 0.1
    done
    if ours_alive "${pids[$i]}" "${starts[$i]}"; then
        say "${names[$i]} (pid ${pids[$i]}) ignored SIGTERM for 10s; sending SIGKILL"
        kill -KILL "${pids[$i]}" 2>/dev/null || true
        sleep 0.2
        ours_alive "${pids[$i]}" "${starts[$i]}" && die "${names[$i]} (pid ${pids[$i]}) is still running"
    fi
    stopped="$stopped ${names[$i]}(${pids[$i]})"
done

rm -f "$PIDS"
say "stopped:${stopped:- nothing}"
