#!/bin/bash
# usage: sample.sh LOG OUTPREFIX  -- waits for first decision in LOG, then samples the job JVM
LOG=$1; OUT=$2
until grep -q "first decision" $LOG 2>/dev/null; do sleep 1; done
sleep 6
P=$(pgrep -f PythonGatewayServer | head -1)
echo "pid $P" > $OUT.top
top -H -b -n 3 -d 4 -p $P -w 200 >> $OUT.top
for i in 1 2 3 4 5 6; do jstack $P > $OUT.js$i; sleep 0.7; done
