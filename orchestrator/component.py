"""The orchestrator as a job component: start / poll / stop the job's driver actor by name (re-attachable
from any gateway process). Importing this module registers it (order 80: after the rollout and judge apps
it drives, before the learner)."""

from __future__ import annotations

import ray

from services.jobs import (
    ORCHESTRATOR,
    ComponentStatus,
    JobRecord,
    RunContext,
    driver_actor_name,
    register_component,
)

NAMESPACE = "payoff"


class OrchestratorComponent:
    name = ORCHESTRATOR

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def _actor(self, job: JobRecord):
        try:
            return ray.get_actor(driver_actor_name(job.id), namespace=NAMESPACE)
        except ValueError:
            return None

    def start(self, job: JobRecord) -> None:
        from orchestrator.driver import JobDriver

        if self._actor(job) is not None:
            return
        JobDriver.options(name=driver_actor_name(job.id), namespace=NAMESPACE, lifetime="detached",
                          get_if_exists=True).remote(job.id, job.spec.model_dump(), self.ctx.redis_url)

    def poll(self, job: JobRecord) -> ComponentStatus:
        actor = self._actor(job)
        if actor is None:
            return ComponentStatus(state="absent")
        try:
            state, message = ray.get(actor.status.remote(), timeout=30)
        except Exception as e:  # the actor died: the job fails with the cause
            return ComponentStatus(state="failed", message=f"job driver died: {e}"[:2000])
        if state == "stopped":  # only the runner stops it, while tearing the job down
            return ComponentStatus(state="absent", message=message)
        return ComponentStatus(state=state, message=message)

    def stop(self, job: JobRecord) -> None:
        actor = self._actor(job)
        if actor is None:
            return
        try:
            ray.get(actor.stop.remote(), timeout=10)
        except Exception:
            pass
        ray.kill(actor, no_restart=True)


register_component(ORCHESTRATOR, OrchestratorComponent, order=80)
