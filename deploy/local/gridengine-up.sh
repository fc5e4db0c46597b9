#!/bin/sh
# Start a single-host Grid Engine (Debian's gridengine-master/-exec/-client)
# on this machine, with one queue "all.q" of as many slots as cores, that
# accepts jobs from any user including root.  For trying braggint's
# mp.method=sge|drmaa and for its tests; run as root.  Idempotent.
set -eu
export SGE_ROOT=${SGE_ROOT:-/var/lib/gridengine} SGE_CELL=${SGE_CELL:-default}
common=$SGE_ROOT/$SGE_CELL/common
host=$(hostname)
slots=$(nproc)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Grid Engine insists that a client's address resolves back to its host
# name; on machines where 127.0.0.1 is "localhost" first, alias the two.
echo "$host localhost" > "$common/host_aliases"
echo "$host" > "$common/act_qmaster"
chown sgeadmin:sgeadmin "$common/host_aliases" "$common/act_qmaster"

if ! qconf -sh >/dev/null 2>&1; then
    pkill -9 -f sge_qmaster 2>/dev/null || true
    rm -f /var/spool/gridengine/qmaster/qmaster.pid
    /etc/init.d/gridengine-master start >/dev/null
    for _ in $(seq 30); do qconf -sh >/dev/null 2>&1 && break; sleep 1; done
fi

# Jobs of root are refused by default (min_uid 1000).
qconf -sconf global | sed -e 's/^min_uid .*/min_uid 0/' -e 's/^min_gid .*/min_gid 0/' \
    -e 's/^execd_spool_dir .*/execd_spool_dir \/var\/spool\/gridengine\/execd/' > "$work/global"
qconf -Mconf "$work/global" >/dev/null 2>&1 || true
qconf -as "$host" >/dev/null 2>&1 || true

if ! qconf -se "$host" >/dev/null 2>&1; then
    printf 'hostname %s\nload_scaling NONE\ncomplex_values NONE\nuser_lists NONE\nxuser_lists NONE\nprojects NONE\nxprojects NONE\nusage_scaling NONE\nreport_variables NONE\n' "$host" > "$work/exechost"
    qconf -Ae "$work/exechost" >/dev/null
fi
if ! qconf -shgrp @allhosts >/dev/null 2>&1; then
    printf 'group_name @allhosts\nhostlist %s\n' "$host" > "$work/allhosts"
    qconf -Ahgrp "$work/allhosts" >/dev/null
fi
if ! qconf -sq all.q >/dev/null 2>&1; then
    qconf -sq 2>/dev/null >/dev/null || true
    cat > "$work/queue" <<QUEUE
qname all.q
hostlist @allhosts
seq_no 0
load_thresholds NONE
suspend_thresholds NONE
nsuspend 1
suspend_interval 00:05:00
priority 0
min_cpu_interval 00:05:00
processors UNDEFINED
qtype BATCH INTERACTIVE
ckpt_list NONE
pe_list NONE
rerun FALSE
slots $slots
tmpdir /tmp
shell /bin/sh
prolog NONE
epilog NONE
shell_start_mode posix_compliant
starter_method NONE
suspend_method NONE
resume_method NONE
terminate_method NONE
notify 00:00:60
owner_list NONE
user_lists NONE
xuser_lists NONE
subordinate_list NONE
complex_values NONE
projects NONE
xprojects NONE
calendar NONE
initial_state default
s_rt INFINITY
h_rt INFINITY
s_cpu INFINITY
h_cpu INFINITY
s_fsize INFINITY
h_fsize INFINITY
s_data INFINITY
h_data INFINITY
s_stack INFINITY
h_stack INFINITY
s_core INFINITY
h_core INFINITY
s_rss INFINITY
h_rss INFINITY
s_vmem INFINITY
h_vmem INFINITY
QUEUE
    qconf -Aq "$work/queue" >/dev/null
fi

if ! pgrep -f sge_execd >/dev/null; then
    /etc/init.d/gridengine-exec start >/dev/null
fi
# Wait until the execution host reports load (then the queue takes jobs).
for _ in $(seq 60); do
    qstat -f -q all.q 2>/dev/null | grep -q "all.q@$host .* [0-9.]\+ " && exit 0
    sleep 1
done
echo "gridengine-up: the execution host $host did not come up" >&2
exit 1
