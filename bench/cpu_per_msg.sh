#!/bin/bash
# CPU ms per message of one gateway tree (issue 10 item 2), see bench/README.md "less CPU per message".
#   [WORKERS=N] bench/cpu_per_msg.sh TREE TAG SIZE SESSIONS N [pyspy]     (as root: smtp-sink -u postfix)
# TREE: a copy of the repository (its bench/gateway.toml, on ports 2710/2610 here, admin and
# webmail on port 0); 200 warm-up messages, then N; CPU = utime+stime of the gateway process from
# /proc/PID/stat of the gateway and of its live children (the intake workers) until smtp-sink has
# counted every message, also split into the supervisor's and the workers'. "pyspy": py-spy record --format raw of the supervisor;
# "pyspy-worker": of the first intake worker instead.
# Alternate trees yourself: for r in 1 2 3; do for t in A B; do bench/cpu_per_msg.sh $t ...; done; done
TREE=$1; TAG=$2; SIZE=$3; CONC=$4; N=$5; SPY=$6
D=/tmp/mailgate-bench/cpu/$TAG; rm -rf $D; mkdir -p $D
sed -e 's/127.0.0.1:2700/127.0.0.1:2710/; s/127.0.0.1\]:2600/127.0.0.1]:2610/; s|/tmp/mailgate-bench/gw-data|'$D'/data|' \
    -e "s|^file = \"directory.json\"|file = \"$TREE/bench/directory.json\"|" $TREE/bench/gateway.toml > $D/gw.toml
# WORKERS=N in the environment: server.workers = N (default: the tree's own default)
[ -n "$WORKERS" ] && sed -i "s|^data_dir = .*|&\nworkers = $WORKERS|" $D/gw.toml
printf '\n[admin]\nlisten = "127.0.0.1:0"\n[webmail]\nlisten = "127.0.0.1:0"\n' >> $D/gw.toml
/usr/sbin/smtp-sink -c -u postfix 127.0.0.1:2610 1000 > $D/sink.out 2>&1 &
SINK=$!
cd $TREE; python3 -m gateway.cli --config $D/gw.toml serve > $D/gw.log 2>&1 &
GW=$!
sleep 0.5; for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/2710) 2>/dev/null && break; sleep 0.2; done
# warm-up
/usr/sbin/smtp-source -s 10 -m 200 -l $SIZE -f sender@remote.test -t user1@example.com 127.0.0.1:2710
sleep 2
# utime+stime in ticks of the gateway and its children (the workers live through the run)
tree_ticks() { local t=0 p; for p in $1 $(cat /proc/$1/task/*/children 2>/dev/null); do
    t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $t; }
c0=$(tree_ticks $GW); s0=$(awk '{print $14 + $15}' /proc/$GW/stat)
L0=$(cut -d' ' -f1 /proc/loadavg)
SPID=$GW; [ "$SPY" = pyspy-worker ] && SPID=$(cat /proc/$GW/task/*/children | awk '{print $1}')
if [ -n "$SPY" ]; then py-spy record --pid $SPID --rate 200 --format raw --nonblocking -o $D/spy.txt -d 600 > $D/spy.log 2>&1 & SPYP=$!; sleep 1; fi
T0=$(date +%s.%N)
/usr/sbin/smtp-source -s $CONC -m $N -l $SIZE -f sender@remote.test -t user1@example.com 127.0.0.1:2710
# wait until the sink has N+200
for i in $(seq 600); do c=$(tr -c '0-9\n' ' ' < $D/sink.out | awk '{for(i=1;i<=NF;i++) l=$i} END{print l+0}'); [ "$c" -ge $((N+200)) ] && break; sleep 0.1; done
T1=$(date +%s.%N)
c1=$(tree_ticks $GW); s1=$(awk '{print $14 + $15}' /proc/$GW/stat)
L1=$(cut -d' ' -f1 /proc/loadavg)
[ -n "$SPY" ] && kill -INT $SPYP && wait $SPYP
HZ=$(getconf CLK_TCK)
python3 -c "print('$TAG size=$SIZE conc=$CONC n=$N cpu_ms_per_msg=%.3f (supervisor %.3f, workers %.3f) wall=%.1fs load=$L0->$L1 sink=$c' % (($c1-$c0)*1000/$HZ/$N, ($s1-$s0)*1000/$HZ/$N, (($c1-$c0)-($s1-$s0))*1000/$HZ/$N, $T1-$T0))"
kill $GW; wait $GW; kill $SINK
