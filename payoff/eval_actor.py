"""The evaluator: a detached Ray actor per evaluation (`evaluator-<id>`, namespace `payoff`) that runs
payoff/evaluate.py and keeps the evaluation's record current in the store.

Invariants:
- The actor owns its record's state from `running` on: running → succeeded (report stored first) |
  failed (with the cause) | cancelled (the cancel flag, read at every heartbeat, stops it after the
  current batch). A queued evaluation cancelled before the actor starts is never run.
- A heartbeat thread writes progress every HEARTBEAT_S, independent of how long one batch takes; if the
  actor dies the heartbeat stops and the store fails the evaluation on the next read.
- It needs `spec.threads` CPUs; while the cluster has none free, Ray keeps it pending and the record
  stays `queued` with that as its detail.
- A `job` model resolves to that job's last checkpoint, read from the job's summary in Redis (the
  gateway checked at submission that the tenant owns the job).
"""

from __future__ import annotations

import logging
import threading

import ray

from services.evals import HEARTBEAT_S, EvalRecord, evaluator_actor_name, register_evaluator

log = logging.getLogger(__name__)
NAMESPACE = "payoff"


@ray.remote(max_concurrency=2)
class Evaluator:
    def __init__(self, eval_id: str, redis_url: str) -> None:
        self.eval_id, self.redis_url = eval_id, redis_url
        self._thread = threading.Thread(target=self._main, daemon=True, name="evaluation")
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _main(self) -> None:
        from services.config import data_plane_client
        from services.eval_store import EvalStore
        from services.jobs import JobState

        store = EvalStore(data_plane_client(self.redis_url))
        rec = store.get(self.eval_id)
        if rec is None or rec.state != JobState.QUEUED or rec.cancel_requested:
            return self._exit()
        try:
            store.transition(self.eval_id, JobState.RUNNING)
            report = self._run(store, rec)
            store.finish(self.eval_id, report)
        except _Cancelled:
            store.transition(self.eval_id, JobState.CANCELLED, error="cancelled by the user")
        except Exception as e:
            log.exception("evaluation %s failed", self.eval_id)
            self._fail(store, f"{type(e).__name__}: {e}")
        self._exit()

    def _run(self, store, rec: EvalRecord):
        from payoff.evaluate import EvalCancelled, Evaluation
        from services.jobs import read_summary

        def resolve(job_id: str) -> str:
            path = read_summary(store.r, job_id).last_checkpoint
            if not path:
                raise ValueError(f"job {job_id} has no checkpoint yet")
            return path

        state = {"cancel": False, "progress": None}
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_S):
                if state["progress"] is not None:
                    state["cancel"] = store.heartbeat(self.eval_id, state["progress"]).cancel_requested

        threading.Thread(target=beat, daemon=True, name="heartbeat").start()
        try:
            ev = Evaluation(
                rec.spec,
                resolve_job=resolve,
                on_progress=lambda p: state.update(progress=p.model_copy()),
                should_stop=lambda: state["cancel"],
            )
            state["progress"] = ev.progress.model_copy()
            store.heartbeat(self.eval_id, ev.progress)
            return ev.run()
        except EvalCancelled:
            raise _Cancelled() from None
        finally:
            stop.set()
            if state["progress"] is not None:
                store.heartbeat(self.eval_id, state["progress"])

    def _fail(self, store, reason: str) -> None:
        from services.jobs import JobState

        try:
            store.transition(self.eval_id, JobState.FAILED, error=reason[:2000])
        except Exception as e:  # the record may already be terminal (cancelled meanwhile)
            log.warning("evaluation %s: could not record the failure: %s", self.eval_id, e)

    def _exit(self) -> None:
        try:
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
        except Exception as e:
            log.warning("evaluator %s could not end itself: %s", self.eval_id, e)


class _Cancelled(Exception):
    pass


class RayEvalLauncher:
    def start(self, record: EvalRecord, redis_url: str) -> None:
        Evaluator.options(
            name=evaluator_actor_name(record.id),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=record.spec.threads,
        ).remote(record.id, redis_url)

    def stop(self, eval_id: str) -> None:
        try:
            ray.kill(ray.get_actor(evaluator_actor_name(eval_id), namespace=NAMESPACE), no_restart=True)
        except ValueError:  # not running (never started, or finished)
            pass


register_evaluator(RayEvalLauncher())
