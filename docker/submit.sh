#!/usr/bin/env bash
# The one-shot submitter of docker-compose.yml: applies rules/ to MySQL, then submits the risk job to the
# JobManager with `riskctl submit` (flink run -d -py). Settings come from the RISKCTL_* variables that
# docker-compose.yml sets; the flink client finds the JobManager through rest.address (FLINK_PROPERTIES).
# Running it again is safe: `rules apply` writes only what changed, and `riskctl submit` refuses to start the
# job from empty state beside a newer checkpoint of it (the checkpoints volume is mounted read-only here): set
# RISKCTL_JOB_RESTORE_FROM in .env to that checkpoint (the refusal names it), after cancelling the previous job
# (Flink UI or `flink cancel`); docs/operations.md. Until then serve, which waits for this one, does not start.
set -euo pipefail

until curl -fsS "http://${FLINK_JOBMANAGER:-jobmanager}:8081/overview" | grep -q '"taskmanagers":[1-9]'; do
  echo "submit: waiting for a TaskManager to register with the JobManager..."
  sleep 2
done

riskctl rules apply /opt/riskctl/rules --author docker-compose -m "rules/ at docker compose up"
exec riskctl submit --name riskctl
