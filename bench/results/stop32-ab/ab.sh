#!/bin/bash
# A/B of the job: riskctl/ and jobs/ of the session start (e8bff7b) against HEAD (compiled modules unchanged)
set -u
cd /work/main
HEAD_REV=$(git rev-parse HEAD)
restore() { git checkout -q "$HEAD_REV" -- riskctl jobs; }
trap restore EXIT
.venv/bin/riskctl stack up > /dev/null 2>&1
for round in 1 2; do
  for arm in new old; do
    if [ $arm = old ]; then git checkout -q e8bff7b -- riskctl jobs; else git checkout -q "$HEAD_REV" -- riskctl jobs; fi
    .venv/bin/python bench/bench.py --only riskctl-thread --no-p2 --no-cluster --throughput-only --out /tmp/ab32-$arm-$round > /tmp/ab32-$arm-$round.log 2>&1
    echo "$round $arm $(grep -E 'sustained [0-9.,]+ events/s' /tmp/ab32-$arm-$round.log | tail -1) | $(grep -iE 'decide.*µs|us/event' /tmp/ab32-$arm-$round.log | tail -1)"
  done
done
.venv/bin/riskctl stack down > /dev/null 2>&1
