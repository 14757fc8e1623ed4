"""Job components that are one detached Ray actor per job (the orchestrator's job driver, the learner's
fit), found by name from the job id in namespace `payoff` — so `poll` and `stop` work from any gateway
process, whichever one called `start` (services/jobs.py: components must be re-attachable).

The actor exposes `status() -> (state, message)` with a JobComponent state, or `stopped` once it was
told to stop (reported as `absent`); `stop()` (optional) ends its work gracefully before it is killed.

`stop` releases every Ray resource the actor held, alive or already dead: it kills the actor, waits for
the actors it created (a Ray Train controller and its workers, ...) to die and removes the placement
groups they created (services/ray_utils.release_owned), bounded by STOP_TIMEOUT_S + RELEASE_TIMEOUT_S; what
is still held then is raised, so the runner records it in the job's events.
"""

from __future__ import annotations

from services.jobs import ComponentStatus, JobRecord, RunContext
from services.ray_utils import RELEASE_TIMEOUT_S, release_owned

NAMESPACE = "payoff"
STATUS_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class DetachedActorComponent:
    name = "actor"
    graceful_stop = False  # call the actor's stop() before killing it

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def actor_name(self, job: JobRecord) -> str:
        raise NotImplementedError

    def launch(self, job: JobRecord, name: str) -> None:
        """Create the detached actor `name` (namespace NAMESPACE, lifetime detached, get_if_exists)."""
        raise NotImplementedError

    def _actor(self, job: JobRecord):
        import ray

        try:
            return ray.get_actor(self.actor_name(job), namespace=NAMESPACE)
        except ValueError:
            return None

    def start(self, job: JobRecord) -> None:
        if self._actor(job) is None:  # a relaunch first frees what a dead predecessor still holds
            release_owned(self.actor_name(job), NAMESPACE, timeout_s=RELEASE_TIMEOUT_S)
            self.launch(job, self.actor_name(job))

    def poll(self, job: JobRecord) -> ComponentStatus:
        import ray

        actor = self._actor(job)
        if actor is None:
            return ComponentStatus(state="absent")
        try:
            state, message = ray.get(actor.status.remote(), timeout=STATUS_TIMEOUT_S)
        except Exception as e:  # the actor died: the job fails with the cause
            return ComponentStatus(state="failed", message=f"{self.name} actor died: {e}"[:2000])
        if state == "stopped":  # only the runner stops it, while tearing the job down
            return ComponentStatus(state="absent", message=message)
        return ComponentStatus(state=state, message=message)

    def stop(self, job: JobRecord) -> None:
        import ray

        actor = self._actor(job)
        if actor is not None and self.graceful_stop:
            try:
                ray.get(actor.stop.remote(), timeout=STOP_TIMEOUT_S)
            except Exception:  # it is killed next either way
                pass
        # also when the actor is gone (killed, crashed): what it created may still hold CPUs
        release_owned(self.actor_name(job), NAMESPACE, timeout_s=RELEASE_TIMEOUT_S)
