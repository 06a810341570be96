#!/usr/bin/env bash
# A single-node Slurm on this machine, for the sweep tests and for people without a cluster:
#   scripts/slurm_local.sh start     install (Debian's slurm-wlm and munge) if needed, configure, start
#   scripts/slurm_local.sh stop      stop slurmd, slurmctld and munged
#   scripts/slurm_local.sh status    sinfo
# One node (this host, all its CPUs), one partition "debug", no cgroups and no accounting
# database (so sacct has no records; scripts/sweep.py reads squeue and the runs' own files).
# Needs root (or sudo). Writes /etc/slurm/slurm.conf (the previous one is kept as .ekvae-backup).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
cmd=${1:-}

start() {
  local missing=""
  for p in slurmctld slurmd slurm-client munge; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    echo "slurm_local: installing$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
  # munge: a key, its directories, the daemon
  [ -f /etc/munge/munge.key ] || $SUDO /usr/sbin/mungekey -c
  $SUDO mkdir -p /run/munge /var/log/munge /var/lib/munge
  $SUDO chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
  if ! pgrep -x munged >/dev/null; then $SUDO su -s /bin/sh munge -c /usr/sbin/munged; fi
  munge -n | unmunge >/dev/null || { echo "slurm_local: munge does not work" >&2; exit 1; }
  # slurm.conf for this one host
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
  $SUDO mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  if [ -f /etc/slurm/slurm.conf ] && ! grep -q "written by ekvae" /etc/slurm/slurm.conf; then
    $SUDO cp /etc/slurm/slurm.conf /etc/slurm/slurm.conf.ekvae-backup
  fi
  $SUDO tee /etc/slurm/slurm.conf >/dev/null <<CONF
# written by ekvae scripts/slurm_local.sh: one node, no cgroups, no accounting
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  pgrep -x slurmctld >/dev/null || $SUDO slurmctld
  pgrep -x slurmd >/dev/null || $SUDO slurmd
  for _ in $(seq 30); do
    if sinfo -h -o "%T" 2>/dev/null | grep -qE "idle|mixed|allocated"; then
      echo "slurm_local: up ($host, $cpus CPUs, partition debug)"
      return 0
    fi
    sleep 1
  done
  echo "slurm_local: the node did not become idle; see /var/log/slurm/*.log" >&2
  sinfo >&2 || true
  exit 1
}

stop() {
  for d in slurmd slurmctld munged; do
    if pgrep -x $d >/dev/null; then $SUDO pkill -x $d || true; fi
  done
  echo "slurm_local: stopped"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) sinfo ;;
  *) echo "usage: scripts/slurm_local.sh start|stop|status" >&2; exit 2 ;;
esac
