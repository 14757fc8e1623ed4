"""The job driver actor: one detached Ray actor per job (named `driver_actor_name(job_id)` in namespace
`payoff`, so any gateway process finds it), running the rollout loop (orchestrator/loop.py) on a thread
until it is stopped. It holds no state that matters: tasks, seeds and statistics restart from the spec,
trajectories live in Redis, the learner's progress is read from the job's keys.

States: `starting` → `running` (the loop runs) → `stopped` after `stop()`, or `failed` with the cause if
the loop raised — for rejected rollout requests (orchestrator/failures.py) the message is the replica's
error itself, so the job fails with it. The runner stops the driver when the job ends (services/jobs.py: only the learner
reports success).
"""

from __future__ import annotations

import logging
import threading

import ray

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_concurrency=4)
class JobDriver:
    def __init__(self, job_id: str, spec: dict, redis_url: str):
        from services.jobspec import JobSpec

        self.job_id, self.redis_url = job_id, redis_url
        self.spec = JobSpec.model_validate(spec)
        self.state, self.message = "starting", ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True, name="rollout-loop")
        self._thread.start()

    def status(self) -> tuple[str, str]:
        return self.state, self.message

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _main(self) -> None:
        from orchestrator import loop
        from orchestrator.failures import RolloutRejected
        from services.config import data_plane_client
        from services.jobs import rollout_app_name
        from services.queue import TrajectoryQueue
        from services.rollout_api import RolloutClient

        try:
            queue = TrajectoryQueue(data_plane_client(self.redis_url), self.job_id)
            client = RolloutClient(rollout_app_name(self.job_id))
            self.state = "running"
            loop.run(self.job_id, self.spec, client, queue, self._stop)
            self.state, self.message = "stopped", "stopped by the runner"
        except RolloutRejected as e:
            self.state, self.message = "failed", str(e)[:2000]
            log.error("job %s: rollout requests rejected: %s", self.job_id, e)
        except Exception as e:
            from services.errors import reason

            self.state, self.message = "failed", reason(e)
            log.exception("job %s: rollout loop failed", self.job_id)
