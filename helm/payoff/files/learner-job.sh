#!/bin/sh
# Entrypoint of the chart's learner RayJob (templates/learnerjob.yaml): train the job spec next to this script
# (job.yaml) on this RayJob's own Ray cluster and end with it.
#
# `payoff serve` joins the cluster (RAY_ADDRESS, set by Ray for a job's entrypoint) and runs a private gateway
# and job runner against REDIS_URL (a Redis database of its own); `payoff submit --watch` hands it the spec and
# follows the job: the rollout and judge replicas deploy as Serve apps and the learner runs as a Ray Train job,
# all on this cluster's worker groups. The script exits with the job (0: succeeded), stopping the gateway.
set -u
HERE=$(dirname "$0")
PORT=${PAYOFF_LEARNER_JOB_PORT:-8088}
WAIT_S=${PAYOFF_LEARNER_JOB_START_TIMEOUT_S:-600}
export PAYOFF_URL="http://127.0.0.1:$PORT"
export PAYOFF_API_KEY="$PAYOFF_ADMIN_KEY"

payoff serve --host 0.0.0.0 --port "$PORT" --max-jobs 1 &
SERVER=$!
stop_server() { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; }
trap stop_server EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

waited=0
until payoff jobs --limit 1 >/dev/null 2>&1; do
  if ! kill -0 "$SERVER" 2>/dev/null; then
    echo "learner-job: payoff serve exited before the gateway came up" >&2
    exit 1
  fi
  if [ "$waited" -ge "$WAIT_S" ]; then
    echo "learner-job: the gateway did not answer within ${WAIT_S}s" >&2
    exit 1
  fi
  sleep 2
  waited=$((waited + 2))
done

payoff submit "$HERE/job.yaml" --watch
rc=$?
echo "learner-job: job ended (exit $rc)"
exit "$rc"
