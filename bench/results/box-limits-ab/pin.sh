#!/bin/bash
# wait for the job's decide thread, then: it alone on cpu 1, everything else on cpu 0
for i in $(seq 1 600); do
  for p in $(pgrep java); do
    for t in /proc/$p/task/*; do
      if grep -q '^decide' $t/comm 2>/dev/null; then jvm=$p; fi
    done
  done
  [ -n "$jvm" ] && break; sleep 0.2
done
sleep 1
for p in $(pgrep -f java) $(pgrep -f bench.py); do taskset -a -p -c 0 $p >/dev/null 2>&1; done
for t in /proc/$jvm/task/*; do
  if grep -q '^decide' $t/comm; then taskset -p -c 1 $(basename $t) ; fi
done
echo "pinned $(date +%T)"
