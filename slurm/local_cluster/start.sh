#!/usr/bin/env bash
# A one-node SLURM "cluster" on localhost for the tests (profile slurm/profiles/local.toml).
#
#   slurm/local_cluster/start.sh     install (if needed), configure and start; idempotent
#   slurm/local_cluster/stop.sh      stop every daemon this script started
#   slurm/local_cluster/start.sh status
#
# Debian 12 (bookworm) or similar, as root, no systemd: installs slurm-wlm, munge, slurmdbd and
# mariadb-server, writes a one-node slurm.conf (partition `debug`, node = this host at 127.0.0.1)
# and starts munged, mariadb, slurmdbd (real accounting: `sacct`, which submitit polls for job
# states), slurmctld and slurmd.
# Adapted from shared/reference/slurm/start_slurm.sh (its facts are kept as comments below).
#
# Environment:
#   LOCAL_SLURM_CPUS     CPUs the node advertises (default: max(nproc, 8); more than nproc lets the
#                        tests' tiny jobs wait on SLURM concurrently)
#   LOCAL_SLURM_MEM_MB   RealMemory (default: MemTotal - 512 MB)
#   LOCAL_SLURM_SKIP_APT_UPDATE=1   skip `apt-get update` before installing
set -euo pipefail

NODE="$(hostname -s)"
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
CTLD_SPOOL=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
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

if [[ "${1:-start}" == status ]]; then
  for pf in "$MUNGE_PID" "$DBD_PID" "$CTLD_PID" "$SLURMD_PID"; do
    if alive "$pf"; then echo "$pf: running ($(cat "$pf"))"; else echo "$pf: not running"; fi
  done
  sinfo 2>/dev/null || true
  exit 0
fi
[[ "${1:-start}" == start ]] || { echo "usage: $0 [start|status]" >&2; exit 2; }
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

# The node name must resolve: srun, and MASTER_ADDR for torch.distributed, use it.
getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >> /etc/hosts

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
MEM="${LOCAL_SLURM_MEM_MB:-$(( MEM_TOTAL > 1024 ? MEM_TOTAL - 512 : MEM_TOTAL ))}"
mkdir -p "$CONF_DIR" "$LOG_DIR" "$CTLD_SPOOL" "$SLURMD_SPOOL"
NEW_CONF=$(cat <<EOF
# One-node SLURM for byol-bench's tests (written by slurm/local_cluster/start.sh)
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
SlurmdSpoolDir=${SLURMD_SPOOL}
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
)
CONF_CHANGED=0
if [[ ! -f $CONF_DIR/slurm.conf ]] || [[ "$(cat $CONF_DIR/slurm.conf)" != "$NEW_CONF" ]]; then
  printf '%s\n' "$NEW_CONF" > "$CONF_DIR/slurm.conf"; CONF_CHANGED=1
fi
chmod 0644 "$CONF_DIR/slurm.conf"

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
if alive "$CTLD_PID" && [[ $CONF_CHANGED == 1 ]]; then
  # `scontrol reconfigure` does not apply every option (AuthInfo, for one): restart instead.
  log "slurm.conf changed: restarting slurmctld and slurmd"
  bash "$(dirname "$0")/stop.sh" --slurm-only
fi
alive "$CTLD_PID" || slurmctld   # forks; job and node state survive restarts in $CTLD_SPOOL
for _ in $(seq 1 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
scontrol ping | grep -q UP || { tail -20 "$LOG_DIR/slurmctld.log" >&2; exit 1; }
alive "$SLURMD_PID" || slurmd -N "$NODE"

# ------------------------------------------------------------------------------------ 6. node ready
STATE=""
for _ in $(seq 1 150); do
  STATE=$(sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -1)
  case "$STATE" in
    idle|mixed|allocated|completing) break ;;
    down*|drain*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 0.2
done
case "$STATE" in
  idle|mixed|allocated|completing) ;;
  *) echo "node $NODE is not ready (state=$STATE)" >&2; scontrol show node "$NODE" >&2
     tail -20 "$LOG_DIR/slurmd.log" >&2; exit 1 ;;
esac
# The accounting database must answer before the first job (submitit polls `sacct`).
for _ in $(seq 1 100); do sacct -n -X -j 1 >/dev/null 2>&1 && break; sleep 0.1; done
log "slurm up: node $NODE ($STATE, CPUs=$CPUS, RealMemory=${MEM}MB), accounting by slurmdbd, took $(elapsed)s"
