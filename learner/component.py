"""The learner as a job component: launch and watch the job's Ray Train fit.

One detached Ray actor per job (named `learner_actor_name(job_id)` in namespace `payoff`, so any gateway
process finds it) runs `fit` on a thread: `starting` → `running` (the TorchTrainer is launched) →
`succeeded` (trained to `learner.steps`, policy exported to `<data_dir>/jobs/<id>/final`) or `failed`
with Ray Train's error — whatever `fit` raises (a worker error after its retries, a worker group that
cannot be placed) ends the job as failed with that reason, never a learner stuck in `running`. Step
metrics and checkpoints reach the job's event stream from the learner itself (learner/ray_train.py).
Rollouts are the orchestrator's business (orchestrator/); the learner only reads the job's trajectory
stream.

Stop (cancel, failure of any component, success) kills the actor and releases what its Train run held:
the controller and worker actors die with it (they are owned by it) and the run's placement group is
removed by ownership (services/actor_component.py), also when the actor had already died.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import ray

from services.actor_component import NAMESPACE, DetachedActorComponent
from services.jobs import LEARNER, JobRecord, learner_actor_name, register_component

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_concurrency=4)
class LearnerRun:
    def __init__(self, job_id: str, spec: dict, redis_url: str, data_dir: str):
        from services.jobspec import JobSpec

        self.job_id, self.redis_url = job_id, redis_url
        self.spec = JobSpec.model_validate(spec)
        self.dir = Path(data_dir) / "jobs" / job_id
        self.state, self.message = "starting", ""
        threading.Thread(target=self._main, daemon=True, name="learner-fit").start()

    def status(self) -> tuple[str, str]:
        return self.state, self.message

    def _main(self) -> None:
        from learner.ray_train import TrainLaunch, fit
        from learner.trainer import LearnerConfig
        from services import affinity

        try:
            spec, ln = self.spec, self.spec.learner
            cfg = LearnerConfig.from_job(spec, self.job_id, self.redis_url, str(self.dir / "checkpoints"))
            launch = TrainLaunch(
                workers=ln.workers,
                cpus_per_worker=ln.cpus_per_worker,
                gpus_per_worker=ln.gpus_per_worker,
                strategy=ln.strategy,
                rollout_cores=affinity.job_pools(spec)[0],
                storage_path=str(self.dir / "ray"),
            )
            self.state = "running"
            result = fit(cfg, launch, export_dir=str(self.dir / "final"))
            if result.error:
                raise result.error
            self.state, self.message = "succeeded", f"policy exported to {self.dir / 'final'}"
        except BaseException as e:  # SystemExit / KeyboardInterrupt in the thread too: fail, never hang
            from services.errors import reason

            # the root cause in one line (Ray Train's error text is the worker's whole traceback)
            self.state, self.message = "failed", reason(e, prefix="training failed: ")
            log.exception("job %s: learner failed", self.job_id)


class LearnerComponent(DetachedActorComponent):
    """Runner-facing side: start / poll / stop the job's learner actor by name."""

    name = LEARNER

    def actor_name(self, job: JobRecord) -> str:
        return learner_actor_name(job.id)

    def launch(self, job: JobRecord, name: str) -> None:
        LearnerRun.options(name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True).remote(
            job.id, job.spec.model_dump(), self.ctx.redis_url, str(self.ctx.data_dir)
        )


register_component(LEARNER, LearnerComponent, order=90)
