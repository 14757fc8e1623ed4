"""A probe learner for the gateway tests: the `learner` component contract exercised end to end, no training.

It runs as a named detached Ray actor (as the real learner does), plays the orchestrator's part itself: it
asks the job's rollout app (services/rollout_api requests) for
real episodes (written to the job's trajectory queue), reads them back through the consumer group, acks
them and publishes one StepEvent per step with the mean reward, plus a CheckpointEvent pointing at the
job's (untrained) model. With `hold=True` it reports `running` after its steps until the test sets the
release key, so a test can restart the gateway while the job is mid-flight.
"""

from __future__ import annotations

import threading
import time

import ray

from services.jobs import ComponentStatus, JobRecord, RunContext, learner_actor_name

NAMESPACE = "payoff"


def release_key(job_id: str) -> str:
    return f"payoff:test:{job_id}:release"


@ray.remote(num_cpus=0.1, max_concurrency=4)
class ProbeActor:
    def __init__(self, job_id: str, redis_url: str, spec: dict, hold: bool) -> None:
        self.job_id, self.redis_url, self.spec, self.hold = job_id, redis_url, spec, hold
        self.state, self.message = "running", ""
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            self._loop()
            self.state = "succeeded"
        except Exception as e:  # reported through poll, as a real learner would
            self.state, self.message = "failed", f"{type(e).__name__}: {e}"

    def _loop(self) -> None:
        from ray import serve

        from services.config import redis_client
        from services.jobs import CheckpointEvent, StepEvent, publish_event, rollout_app_name
        from services.queue import TrajectoryQueue
        from services.rollout_api import EpisodeRequest, SamplingParams

        r = redis_client(self.redis_url)
        queue = TrajectoryQueue(r, self.job_id)
        deadline = time.monotonic() + 120
        while True:  # the rollout app is deployed concurrently: wait for it
            try:
                handle = serve.get_app_handle(rollout_app_name(self.job_id))
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        env = self.spec["tasks"][0]["env"]
        every = self.spec["learner"]["checkpoint_every"]
        for step in range(self.spec["learner"]["steps"]):
            req = EpisodeRequest(
                env=env,
                seed=step,
                group_size=2,
                max_turns=1,
                enqueue=True,
                sampling=SamplingParams(max_tokens=8, seed=step),
            )
            handle.episodes.remote(req).result(timeout_s=120)
            batch = queue.get("probe", count=16, block_ms=2000)
            rewards = [item.trajectory.reward for item in batch.items]
            publish_event(
                r,
                StepEvent(
                    job_id=self.job_id,
                    step=step + 1,
                    policy_version=0,
                    metrics={
                        "reward_mean": sum(rewards) / max(len(rewards), 1),
                        "trajectories": float(len(rewards)),
                    },
                ),
            )
            queue.ack(batch)
            if (step + 1) % every == 0:
                path = self.spec["model"]["path"]  # untrained: the job's own model
                publish_event(r, CheckpointEvent(job_id=self.job_id, step=step + 1, path=path))
        while self.hold and not r.exists(release_key(self.job_id)):
            time.sleep(0.2)

    def status(self) -> tuple[str, str]:
        return self.state, self.message


class ProbeLearner:
    """JobComponent for the learner slot, re-attachable by actor name from any gateway process."""

    name = "learner"

    def __init__(self, ctx: RunContext, hold: bool = False) -> None:
        self.ctx, self.hold = ctx, hold

    def _actor(self, job: JobRecord):
        try:
            return ray.get_actor(learner_actor_name(job.id), namespace=NAMESPACE)
        except ValueError:
            return None

    def start(self, job: JobRecord) -> None:
        ProbeActor.options(
            name=learner_actor_name(job.id), namespace=NAMESPACE, lifetime="detached", get_if_exists=True
        ).remote(job.id, self.ctx.redis_url, job.spec.model_dump(mode="json"), self.hold)

    def poll(self, job: JobRecord) -> ComponentStatus:
        actor = self._actor(job)
        if actor is None:
            return ComponentStatus(state="absent", message="no learner actor")
        try:
            state, message = ray.get(actor.status.remote(), timeout=5)
        except ray.exceptions.GetTimeoutError:
            return ComponentStatus(state="starting", message="learner actor is starting")
        return ComponentStatus(state=state, message=message)

    def stop(self, job: JobRecord) -> None:
        actor = self._actor(job)
        if actor is not None:
            ray.kill(actor, no_restart=True)
