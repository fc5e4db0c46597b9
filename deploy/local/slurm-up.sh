#!/bin/sh
# Start a single-host SLURM (Debian's slurmctld, slurmd and munge) on this
# machine: one partition "debug" holding this host with all its cores, no
# cgroups (works in containers).  For trying braggint's mp.method=slurm and
# for its tests; run as root.  Idempotent: an existing /etc/slurm/slurm.conf
# that does not carry this script's mark is left alone.
set -eu
host=$(hostname)
conf=/etc/slurm/slurm.conf
node=$(slurmd -C | head -1)

if [ ! -f "$conf" ] || grep -q "^# written by braggint slurm-up.sh" "$conf"; then
    mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    cat > "$conf" <<CONF
# written by braggint slurm-up.sh
ClusterName=braggint
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
fi

if ! pgrep -x munged >/dev/null; then
    [ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
    su -s /bin/sh munge -c /usr/sbin/munged 2>/dev/null || /usr/sbin/munged --force
fi
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
    if sinfo -h -o "%T" 2>/dev/null | grep -qx "idle\|mixed\|allocated"; then
        exit 0
    fi
    scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    sleep 1
done
echo "slurm-up: the node $host did not become idle:" "$(sinfo -h 2>&1)" >&2
exit 1
