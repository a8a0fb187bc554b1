#!/usr/bin/env bash
# A SLURM "cluster" on localhost for the tests: one node (profile slurm/profiles/local.toml), or
# N nodes n1..nN, each its own slurmd on this machine (profile slurm/profiles/local2.toml).
#
#   slurm/local_cluster/start.sh             install (if needed), configure and start one node
#   slurm/local_cluster/start.sh --nodes 2   the same with two nodes, n1 and n2
#   slurm/local_cluster/stop.sh              stop every daemon this script started
#   slurm/local_cluster/start.sh status
#
# Idempotent: a rerun with the same node count changes nothing (~0.5 s); another node count
# rewrites slurm.conf and restarts slurmctld and the slurmds (every slurmd of the old layout is
# stopped and waited for). Job and accounting state survive; job ids keep counting. A switch waits
# (LOCAL_SLURM_DRAIN_S, default 120 s) for running jobs to end, and refuses if they do not.
#
# Debian 12 (bookworm) or similar, as root, no systemd: installs slurm-wlm, munge, slurmdbd and
# mariadb-server, writes slurm.conf (partition `debug`; one node = this host at 127.0.0.1) and
# starts munged, mariadb, slurmdbd (real accounting: `sacct`, which submitit polls for job
# states), slurmctld and slurmd(s).
# Adapted from shared/reference/slurm/start_slurm.sh and two-nodes.md (their facts are kept as
# comments below). Several nodes need Debian's multiple-slurmd build (`scontrol show config`:
# MULTIPLE_SLURMD = Yes): each slurmd has its own port, spool dir, pid file and log (`%n`).
#
# Environment:
#   LOCAL_SLURM_CPUS     CPUs each node advertises (default: max(nproc, 8); more than nproc lets
#                        the tests' tiny jobs wait on SLURM concurrently)
#   LOCAL_SLURM_MEM_MB   RealMemory of each node (default: (MemTotal - 512 MB) / nodes)
#   LOCAL_SLURM_SKIP_APT_UPDATE=1   skip `apt-get update` before installing
#   LOCAL_SLURM_DRAIN_S  how long a switch of the node count waits for running jobs (default 120)
set -euo pipefail

NODE="$(hostname -s)"
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
CTLD_SPOOL=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid   # one node; node nK of several: /run/slurmd-nK.pid
DBD_PID=/run/slurmdbd.pid
MUNGE_PID=/run/munge/munged.pid
DB_PASS=byolbench-local   # a database on 127.0.0.1 for this test cluster only

log() { echo "[local_cluster $(date +%T)] $*"; }
# pidfile -> live, non-zombie process? (kill -0 alone is fooled by zombies when PID 1 does not reap)
alive() {
  local pid; pid=$(cat "$1" 2>/dev/null) || return 1
  [[ -n "$pid" ]] && [[ "$(ps -o stat= -p "$pid" 2>/dev/null)" =~ ^[^Z] ]]
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

usage() { echo "usage: $0 [start|status] [--nodes N]   (N nodes n1..nN; default: one node)" >&2; exit 2; }
ACTION=start
NODES=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    start|status) ACTION=$1 ;;
    --nodes) [[ $# -ge 2 ]] || usage; NODES=$2; shift ;;
    --nodes=*) NODES=${1#--nodes=} ;;
    *) usage ;;
  esac
  shift
done
[[ $NODES =~ ^[1-8]$ ]] || { echo "$0: --nodes must be 1 to 8 (got '$NODES')" >&2; exit 2; }
if [[ $NODES == 1 ]]; then
  NODE_NAMES=("$NODE")
else
  NODE_NAMES=(); for i in $(seq 1 "$NODES"); do NODE_NAMES+=("n$i"); done
fi
slurmd_pid() { if [[ $NODES == 1 ]]; then echo "$SLURMD_PID"; else echo "/run/slurmd-$1.pid"; fi; }

if [[ $ACTION == status ]]; then
  for pf in "$MUNGE_PID" "$DBD_PID" "$CTLD_PID" "$SLURMD_PID" /run/slurmd-*.pid; do
    [[ -e $pf || $pf == "$SLURMD_PID" ]] || continue
    if alive "$pf"; then echo "$pf: running ($(cat "$pf"))"; else echo "$pf: not running"; fi
  done
  sinfo 2>/dev/null || true
  exit 0
fi
[[ $EUID -eq 0 ]] || { echo "$0: must run as root (it installs packages and starts daemons)" >&2; exit 1; }
T0=$(date +%s%N)
elapsed() { local ns=$(( $(date +%s%N) - T0 )); printf "%d.%02d" $((ns/1000000000)) $(((ns/10000000)%100)); }

# ------------------------------------------------------------------------------------ 1. install
PKGS=()
for c in slurmctld slurmd sbatch munged; do command -v $c >/dev/null || PKGS=(slurm-wlm munge); done
command -v slurmdbd >/dev/null || PKGS+=(slurmdbd)
command -v mysqld_safe >/dev/null || PKGS+=(mariadb-server)
if [[ ${#PKGS[@]} -gt 0 ]]; then
  export DEBIAN_FRONTEND=noninteractive
  # Keep dpkg postinst scripts from starting services (there is no init system to start them).
  MADE_POLICY=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; MADE_POLICY=1
  fi
  [[ "${LOCAL_SLURM_SKIP_APT_UPDATE:-0}" == 1 ]] || apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
  [[ $MADE_POLICY == 1 ]] && rm -f /usr/sbin/policy-rc.d
  log "installed ${PKGS[*]} in $(elapsed)s"
fi

# The node names must resolve: srun, and MASTER_ADDR for torch.distributed (the job's first node),
# use them. Without n1/n2 in /etc/hosts srun still works (NodeAddr is 127.0.0.1) but torch's
# rendezvous at MASTER_ADDR=n1 times out after 5 s (DistNetworkError).
getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >> /etc/hosts
for name in "${NODE_NAMES[@]}"; do
  [[ $name == "$NODE" ]] && continue
  addr=$(getent ahostsv4 "$name" | awk 'NR==1{print $1}' || true)
  if [[ -z $addr ]]; then
    echo "127.0.0.1 $name   # slurm/local_cluster/start.sh" >> /etc/hosts
  elif [[ $addr != 127.* ]]; then
    echo "$0: node name $name resolves to $addr, not to this machine; free the name" >&2; exit 1
  fi
done

# ------------------------------------------------------------------------------------ 2. munge
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then   # the Debian postinst normally creates it
  if command -v mungekey >/dev/null; then mungekey --create --force -k /etc/munge/munge.key
  else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge; chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
if ! alive "$MUNGE_PID"; then
  rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock "$MUNGE_PID"
  runuser -u munge -- /usr/sbin/munged      # daemonizes itself
fi
for _ in $(seq 1 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
munge -n | unmunge >/dev/null || { echo "munge is not working" >&2; exit 1; }

# ------------------------------------------------------------------------------------ 3. slurm.conf
NPROC=$(nproc)
CPUS="${LOCAL_SLURM_CPUS:-$(( NPROC > 8 ? NPROC : 8 ))}"
MEM_TOTAL=$(awk '/^MemTotal:/{print int($2/1024)}' /proc/meminfo)
MEM="${LOCAL_SLURM_MEM_MB:-$(( (MEM_TOTAL > 1024 ? MEM_TOTAL - 512 : MEM_TOTAL) / NODES ))}"
mkdir -p "$CONF_DIR" "$LOG_DIR" "$CTLD_SPOOL"
if [[ $NODES == 1 ]]; then
  mkdir -p "$SLURMD_SPOOL"
  SLURMD_LINES="SlurmdSpoolDir=${SLURMD_SPOOL}
SlurmdPidFile=${SLURMD_PID}
SlurmdLogFile=${LOG_DIR}/slurmd.log"
  NODE_LINES="NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN"
  TITLE="One-node"
else
  # one slurmd per node on this machine: each its own port, spool dir, pid file and log (%n)
  SLURMD_LINES="SlurmdSpoolDir=${SLURMD_SPOOL}-%n
SlurmdPidFile=/run/slurmd-%n.pid
SlurmdLogFile=${LOG_DIR}/slurmd-%n.log"
  NODE_LINES=""
  for i in $(seq 1 "$NODES"); do
    mkdir -p "${SLURMD_SPOOL}-n$i"
    NODE_LINES+="NodeName=n$i NodeHostname=${NODE} NodeAddr=127.0.0.1 Port=$((17000 + i)) "
    NODE_LINES+="CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN"$'\n'
  done
  NODE_LINES=${NODE_LINES%$'\n'}
  TITLE="${NODES}-node"
fi
NODE_LIST=$(IFS=,; echo "${NODE_NAMES[*]}")
NEW_CONF=$(cat <<EOF
# ${TITLE} SLURM for byol-bench's tests (written by slurm/local_cluster/start.sh)
ClusterName=byolbench
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=cred_expire=10
MailProg=/bin/true
MpiDefault=none
# no cgroups, no systemd:
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5
# a job whose afterok dependency failed is cancelled instead of pending forever
DependencyParameters=kill_invalid_depend
# config values win over detected hardware (lets CPUs exceed nproc)
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
MinJobAge=600
# submitit ignores SIGTERM: a requeued or cancelled job is SIGKILLed KillWait seconds later
KillWait=10
StateSaveLocation=${CTLD_SPOOL}
SlurmctldPidFile=${CTLD_PID}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
${SLURMD_LINES}
SlurmctldDebug=info
SlurmdDebug=info
${NODE_LINES}
PartitionName=debug Nodes=${NODE_LIST} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
)
CONF_CHANGED=0   # written in step 5, once the daemons of the old layout are stopped
if [[ ! -f $CONF_DIR/slurm.conf ]] || [[ "$(cat $CONF_DIR/slurm.conf)" != "$NEW_CONF" ]]; then
  CONF_CHANGED=1
fi

# ------------------------------------------------------------------------------------ 4. accounting
if ! mysqladmin ping >/dev/null 2>&1; then
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  setsid mysqld_safe --user=mysql --bind-address=127.0.0.1 > "$LOG_DIR/mysqld_safe.log" 2>&1 < /dev/null &
  for _ in $(seq 1 150); do mysqladmin ping >/dev/null 2>&1 && break; sleep 0.2; done
  mysqladmin ping >/dev/null 2>&1 || { tail -20 "$LOG_DIR/mysqld_safe.log" >&2; exit 1; }
fi
mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
          CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '${DB_PASS}';
          ALTER USER 'slurm'@'localhost' IDENTIFIED BY '${DB_PASS}';
          GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
NEW_DBD_CONF="AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=${LOG_DIR}/slurmdbd.log
PidFile=${DBD_PID}
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=${DB_PASS}
StorageLoc=slurm_acct_db"
if [[ ! -f $CONF_DIR/slurmdbd.conf ]] || [[ "$(cat $CONF_DIR/slurmdbd.conf)" != "$NEW_DBD_CONF" ]]; then
  printf '%s\n' "$NEW_DBD_CONF" > "$CONF_DIR/slurmdbd.conf"
fi
chmod 0600 "$CONF_DIR/slurmdbd.conf"    # slurmdbd refuses a world-readable file
alive "$DBD_PID" || slurmdbd
for _ in $(seq 1 100); do port_open 6819 && break; sleep 0.1; done
port_open 6819 || { tail -20 "$LOG_DIR/slurmdbd.log" >&2; exit 1; }

# ------------------------------------------------------------------------------------ 5. slurm daemons
running_jobs() { squeue -h -t R,CG,CF,S,SO -o %i 2>/dev/null | tr '\n' ' '; }
if [[ $CONF_CHANGED == 1 ]]; then
  if alive "$CTLD_PID"; then
    # A new layout would orphan running jobs (their nodes vanish): let them end first.
    DRAIN_S="${LOCAL_SLURM_DRAIN_S:-120}"
    for _ in $(seq 1 $(( DRAIN_S * 2 ))); do [[ -z "$(running_jobs)" ]] && break; sleep 0.5; done
    JOBS=$(running_jobs)
    if [[ -n $JOBS ]]; then
      echo "$0: jobs ${JOBS}are still running after ${DRAIN_S} s; a new slurm.conf (${NODES} node(s))" \
        "would orphan them: wait for them or scancel them, then rerun" >&2
      exit 1
    fi
  fi
  # `scontrol reconfigure` does not apply every option (AuthInfo, for one), nor new nodes: restart.
  # stop.sh waits for every slurmd of the old layout (/run/slurmd.pid and /run/slurmd-*.pid).
  log "slurm.conf changed (${NODES} node(s)): restarting slurmctld and slurmd"
  bash "$(dirname "$0")/stop.sh" --slurm-only
  printf '%s\n' "$NEW_CONF" > "$CONF_DIR/slurm.conf"
fi
chmod 0644 "$CONF_DIR/slurm.conf"
alive "$CTLD_PID" || slurmctld   # forks; job and node state survive restarts in $CTLD_SPOOL
for _ in $(seq 1 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
scontrol ping | grep -q UP || { tail -20 "$LOG_DIR/slurmctld.log" >&2; exit 1; }
for name in "${NODE_NAMES[@]}"; do alive "$(slurmd_pid "$name")" || slurmd -N "$name"; done

# ------------------------------------------------------------------------------------ 6. nodes ready
node_ready() {  # name -> waits up to 30 s; prints the last state seen
  local state=""
  for _ in $(seq 1 150); do
    state=$(sinfo -h -n "$1" -o '%T' 2>/dev/null | head -1)
    case "$state" in
      idle|mixed|allocated|completing) break ;;
      down*|drain*) scontrol update NodeName="$1" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.2
  done
  echo "$state"
}
STATES=()
for name in "${NODE_NAMES[@]}"; do
  STATE=$(node_ready "$name")
  case "$STATE" in
    idle|mixed|allocated|completing) STATES+=("$name $STATE") ;;
    *) echo "node $name is not ready (state=$STATE)" >&2; scontrol show node "$name" >&2
       tail -20 "$LOG_DIR"/slurmd*.log >&2; exit 1 ;;
  esac
done
# The accounting database must answer before the first job (submitit polls `sacct`).
for _ in $(seq 1 100); do sacct -n -X -j 1 >/dev/null 2>&1 && break; sleep 0.1; done
SUMMARY=$(IFS=,; echo "${STATES[*]}")
log "slurm up: ${NODES} node(s): ${SUMMARY// ,/, } (CPUs=$CPUS, RealMemory=${MEM}MB each), accounting by slurmdbd, took $(elapsed)s"
