#!/usr/bin/env bash
# Stop the local test cluster started by start.sh: slurmctld, every slurmd (one node's, or n1..nN's
# of a --nodes N cluster), slurmdbd, mariadb, munged; each is waited for.
#   slurm/local_cluster/stop.sh               everything
#   slurm/local_cluster/stop.sh --slurm-only  slurmctld and the slurmds (start.sh uses it on a new
#                                             slurm.conf)
# Job and accounting state are kept (start.sh picks them up again); packages stay installed.
set -euo pipefail
shopt -s nullglob
CTLD_PID=/run/slurmctld.pid
SLURMD_PIDS=(/run/slurmd.pid /run/slurmd-*.pid)   # one node; nodes n1..nN (slurmd-%n.pid)
DBD_PID=/run/slurmdbd.pid
MUNGE_PID=/run/munge/munged.pid

alive() {  # pidfile -> live, non-zombie process?
  local pid; pid=$(cat "$1" 2>/dev/null) || return 1
  [[ -n "$pid" ]] && [[ "$(ps -o stat= -p "$pid" 2>/dev/null)" =~ ^[^Z] ]]
}
term_and_wait() {  # pidfile...: SIGTERM each live daemon, wait up to 10 s for all of them
  local pf
  for pf in "$@"; do alive "$pf" && kill -TERM "$(cat "$pf")" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local any=0
    for pf in "$@"; do alive "$pf" && any=1; done
    [[ $any == 0 ]] && return 0
    sleep 0.2
  done
  echo "stop.sh: some daemons did not stop: $*" >&2
  return 1
}

[[ $EUID -eq 0 ]] || { echo "$0: must run as root" >&2; exit 1; }
# `scontrol shutdown` makes slurmctld save its state and stop every registered slurmd; any other
# slurmd (of an earlier layout, or not yet registered) gets SIGTERM from term_and_wait.
if command -v scontrol >/dev/null && alive "$CTLD_PID"; then scontrol shutdown >/dev/null 2>&1 || true; fi
term_and_wait "${SLURMD_PIDS[@]}" "$CTLD_PID"
[[ "${1:-}" == --slurm-only ]] && exit 0
term_and_wait "$DBD_PID"
if command -v mysqladmin >/dev/null && mysqladmin ping >/dev/null 2>&1; then mysqladmin shutdown || true; fi
term_and_wait "$MUNGE_PID"
echo "[local_cluster $(date +%T)] stopped"
