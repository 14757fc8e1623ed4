"""The evaluation store: records, events and reports of `POST /v1/evals`, in Redis.

Both sides use it: the gateway creates, lists, reads and cancels; the evaluator actor (payoff/eval_actor.py)
moves its own record along the job state table, heartbeats, publishes progress and writes the report.

Invariants:
- Every state change goes through `mutate` (WATCH/MULTI on the record) and `check_transition`, and
  appends a `status` event to the evaluation's stream, so the SSE stream and the record never disagree.
- A `running` record whose heartbeat is older than HEARTBEAT_LOST_S (PAYOFF_EVAL_LOST_AFTER_S) is failed on read ("evaluator lost"):
  an evaluator killed with its node never leaves an evaluation running forever.
- The report is stored whole under its own key (bounded by MAX_SAMPLES per-sample values); the record
  keeps the per-model metrics without the per-sample lists, so listing stays small.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Callable

import redis

from services import keys
from services.evals import HEARTBEAT_LOST_S, EvalProgress, EvalRecord, EvalReport, EvalSpec
from services.jobs import JobState, check_transition

EVENTS_MAXLEN = 10_000


class EvalNotFound(KeyError):
    pass


def new_eval_id(spec: EvalSpec) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", spec.name.lower()).strip("-")[:40] or "eval"
    return f"{slug}-{secrets.token_hex(5)}"


class EvalStore:
    def __init__(self, client: redis.Redis, lost_after_s: float | None = None) -> None:
        self.r = client
        env = os.environ.get("PAYOFF_EVAL_LOST_AFTER_S")
        self.lost_after_s = lost_after_s or (float(env) if env else HEARTBEAT_LOST_S)

    # ------------------------------------------------------------------ create / read
    def create(self, tenant: str, spec: EvalSpec) -> EvalRecord:
        now = time.time()
        while True:
            rec = EvalRecord(
                id=new_eval_id(spec),
                tenant=tenant,
                spec=spec,
                created_at=now,
                updated_at=now,
                detail="queued",
            )
            if self.r.set(keys.eval_record(rec.id), rec.model_dump_json(), nx=True):
                break
        with self.r.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.EVALS_ALL, {rec.id: now})
            pipe.zadd(keys.evals_of_tenant(tenant), {rec.id: now})
            self._event(pipe, rec.id, {"type": "status", "state": "queued"})
            pipe.execute()
        return rec

    def get(self, eval_id: str) -> EvalRecord | None:
        raw = self.r.get(keys.eval_record(eval_id))
        if raw is None:
            return None
        rec = EvalRecord.model_validate_json(raw)
        beat = rec.progress.heartbeat_at or rec.updated_at
        if rec.state == JobState.RUNNING and time.time() - beat > self.lost_after_s:
            return self.fail_lost(eval_id)
        return rec

    def fail_lost(self, eval_id: str) -> EvalRecord:
        def change(rec: EvalRecord) -> bool:
            beat = rec.progress.heartbeat_at or rec.updated_at
            if rec.state != JobState.RUNNING or time.time() - beat <= self.lost_after_s:
                return False
            rec.state = JobState.FAILED
            rec.error = f"evaluator lost: no heartbeat for {time.time() - beat:.0f} s (its process died)"
            return True

        return self.mutate(eval_id, change)

    def list(self, tenant: str | None, limit: int = 100) -> list[EvalRecord]:
        index = keys.EVALS_ALL if tenant is None else keys.evals_of_tenant(tenant)
        ids = [i.decode() if isinstance(i, bytes) else i for i in self.r.zrevrange(index, 0, limit - 1)]
        return [rec for i in ids if (rec := self.get(i)) is not None]

    def report(self, eval_id: str) -> EvalReport | None:
        raw = self.r.get(keys.eval_report(eval_id))
        return None if raw is None else EvalReport.model_validate_json(raw)

    # ------------------------------------------------------------------ changes
    def mutate(self, eval_id: str, change: Callable[[EvalRecord], bool | None]) -> EvalRecord:
        """Apply `change` atomically (False: leave it); a state change is checked and becomes an event."""
        key = keys.eval_record(eval_id)
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        raise EvalNotFound(eval_id)
                    rec = EvalRecord.model_validate_json(raw)
                    before = rec.state
                    if change(rec) is False:
                        pipe.unwatch()
                        return rec
                    if rec.state != before:
                        check_transition(before, rec.state)
                    rec.updated_at = time.time()
                    pipe.multi()
                    pipe.set(key, rec.model_dump_json())
                    if rec.state != before:
                        event = {"type": "status", "state": rec.state.value, "error": rec.error}
                        self._event(pipe, eval_id, event)
                    pipe.execute()
                    return rec
                except redis.WatchError:
                    continue

    def transition(self, eval_id: str, to: JobState, error: str | None = None) -> EvalRecord:
        def change(rec: EvalRecord) -> None:
            rec.state, rec.detail = to, to.value
            rec.error = error if error is not None else rec.error

        return self.mutate(eval_id, change)

    def request_cancel(self, eval_id: str) -> EvalRecord:
        """Mark it; a queued evaluation is cancelled at once, a running one by its evaluator at the next
        batch."""

        def change(rec: EvalRecord) -> bool:
            if rec.state.terminal:
                return False
            rec.cancel_requested = True
            if rec.state == JobState.QUEUED:
                rec.state, rec.detail = JobState.CANCELLED, "cancelled before it started"
            return True

        return self.mutate(eval_id, change)

    def heartbeat(self, eval_id: str, progress: EvalProgress) -> EvalRecord:
        """Record progress (and that the evaluator lives); returns the record, so the caller sees a
        cancel request."""
        progress = progress.model_copy(update={"heartbeat_at": time.time()})

        def change(rec: EvalRecord) -> None:
            rec.progress = progress

        rec = self.mutate(eval_id, change)
        self._event(self.r, eval_id, {"type": "progress", **progress.model_dump(exclude={"heartbeat_at"})})
        return rec

    def finish(self, eval_id: str, report: EvalReport) -> EvalRecord:
        self.r.set(keys.eval_report(eval_id), report.model_dump_json())

        def change(rec: EvalRecord) -> None:
            rec.summary = [m.model_copy(update={"welfare": {}}) for m in report.models]
            rec.comparison = report.comparison
            rec.state, rec.detail = JobState.SUCCEEDED, "succeeded"

        return self.mutate(eval_id, change)

    def log(self, eval_id: str, message: str, level: str = "info") -> None:
        self._event(self.r, eval_id, {"type": "log", "level": level, "message": message[:2000]})

    # ------------------------------------------------------------------ events
    @staticmethod
    def _event(client, eval_id: str, event: dict) -> None:
        event = {"eval_id": eval_id, "time": time.time(), **event}
        client.xadd(
            keys.eval_events(eval_id), {"e": json.dumps(event)}, maxlen=EVENTS_MAXLEN, approximate=True
        )

    def events(self, eval_id: str, after: str = "0-0", count: int = 1000) -> list[tuple[str, dict]]:
        rows = self.r.xrange(
            keys.eval_events(eval_id), min=f"({after}" if after != "0-0" else "-", count=count
        )
        out = []
        for eid, fields in rows:
            out.append((eid.decode() if isinstance(eid, bytes) else eid, json.loads(fields[b"e"])))
        return out
