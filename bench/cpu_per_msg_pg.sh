#!/bin/bash
# CPU ms per message on the PostgreSQL spool, split three ways: the supervisor (queue manager,
# delivery), the intake workers, and PostgreSQL (the postmaster and every backend, walwriter,
# checkpointer), for code A/B on PostgreSQL (issue 10). See bench/README.md, 2026-12-04 21:19.
#   bench/cpu_per_msg_pg.sh TREE TAG SIZE SESSIONS N [pyspy|pyspy-worker]   (as root)
# TREE: a copy of the repository; runs TREE/bench/pg_gateway.py --workers 2 (a throwaway
# PostgreSQL 15 cluster, the gateway on ports 2700 -> smtp-sink 127.0.0.1:2600, both must be
# free), 200 warm-up messages from smtp-source, then N; CPU = utime+stime from /proc/PID/stat
# until smtp-sink has counted every message. "pyspy": py-spy record --format raw of the
# supervisor; "pyspy-worker": of the first intake worker. Output in /tmp/mailgate-bench/pgcpu/TAG.
TREE=$1; TAG=$2; SIZE=$3; CONC=$4; N=$5; SPY=$6
D=/tmp/mailgate-bench/pgcpu/$TAG; rm -rf $D; mkdir -p $D
/usr/sbin/smtp-sink -c -u postfix 127.0.0.1:2600 1000 > $D/sink.out 2>&1 &
SINK=$!
cd $TREE; python3 bench/pg_gateway.py --workers 2 > $D/gw.log 2>&1 &
PGW=$!
for i in $(seq 300); do (echo > /dev/tcp/127.0.0.1/2700) 2>/dev/null && break; sleep 0.2; done
sleep 1
/usr/sbin/smtp-source -s 10 -m 200 -l $SIZE -f sender@remote.test -t user1@example.com 127.0.0.1:2700
sleep 2
kids() { cat /proc/$1/task/*/children 2>/dev/null; }
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $t; }
SUP=""; PM=""
for p in $(kids $PGW); do if grep -q postgres /proc/$p/cmdline; then PM=$p; else SUP=$p; fi; done
WK=$(kids $SUP)
desc() { local p; for p in $(kids $1); do echo $p; desc $p; done; }
pgall() { echo $PM $(desc $PM); }
s0=$(ticks $SUP); w0=$(ticks $WK); p0=$(ticks $(pgall))
L0=$(cut -d' ' -f1 /proc/loadavg)
if [ -n "$SPY" ]; then SPID=$SUP; [ "$SPY" = pyspy-worker ] && SPID=$(echo $WK | cut -d" " -f1); py-spy record --pid $SPID --rate 200 --format raw --nonblocking -o $D/spy.txt -d 600 > $D/spy.log 2>&1 & SPYP=$!; sleep 1; fi
T0=$(date +%s.%N)
/usr/sbin/smtp-source -s $CONC -m $N -l $SIZE -f sender@remote.test -t user1@example.com 127.0.0.1:2700
for i in $(seq 1200); do c=$(tr -c '0-9\n' ' ' < $D/sink.out | awk '{for(i=1;i<=NF;i++) l=$i} END{print l+0}'); [ "$c" -ge $((N+200)) ] && break; sleep 0.1; done
T1=$(date +%s.%N)
s1=$(ticks $SUP); w1=$(ticks $WK); p1=$(ticks $(pgall))
L1=$(cut -d' ' -f1 /proc/loadavg)
[ -n "$SPY" ] && kill -INT $SPYP && wait $SPYP
HZ=$(getconf CLK_TCK)
python3 -c "
s=($s1-$s0)*1000/$HZ/$N; w=($w1-$w0)*1000/$HZ/$N; p=($p1-$p0)*1000/$HZ/$N
print('$TAG size=$SIZE conc=$CONC n=$N total=%.2f sup=%.2f workers=%.2f pg=%.2f wall=%.1fs rate=%.0f/s load=$L0->$L1 sink=$c' % (s+w+p, s, w, p, $T1-$T0, $N/($T1-$T0)))"
kill $PGW; wait $PGW; kill $SINK; wait $SINK 2>/dev/null
