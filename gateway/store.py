"""The job store in Redis: one record per job, indexes by tenant and state, the state machine.

Every change is an optimistic transaction (WATCH the record, MULTI/EXEC the new record, its index moves and,
when the state changes, a `status` event on the job's stream), so the API (cancel) and the runner never
overwrite each other and a client watching the events sees every transition exactly once.

Keys: `payoff:{<id>}:job` (names: services/keys.py) (record JSON, without the summary), `payoff:jobs` (zset of every id by creation
time), `payoff:jobs:tenant:<t>` and `payoff:jobs:state:<s>` (zsets, same scores). Redis runs with AOF, so a
restarted gateway finds every job where it was.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterable

import redis

from services import keys
from services.jobs import (
    JobRecord,
    JobState,
    StatusEvent,
    check_transition,
    publish_event,
    read_summary,
    record_key,
    summary_key,
)
from services.jobspec import JobSpec

ALL = keys.JOBS_ALL


class JobNotFound(KeyError):
    pass


def tenant_index(tenant: str) -> str:
    return keys.jobs_of_tenant(tenant)


def state_index(state: JobState) -> str:
    return keys.jobs_in_state(state.value)


def new_job_id(spec: JobSpec) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", spec.name.lower()).strip("-")[:40] or "job"
    return f"{slug}-{secrets.token_hex(5)}"


class JobStore:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    # ------------------------------------------------------------------ create / read
    def create(self, tenant: str, spec: JobSpec) -> JobRecord:
        now = time.time()
        rec = JobRecord(
            id=new_job_id(spec),
            tenant=tenant,
            spec=spec,
            created_at=now,
            updated_at=now,
            state_times={JobState.QUEUED: now},
            detail="queued",
        )
        pipe = self.r.pipeline(transaction=True)
        pipe.set(record_key(rec.id), self._dump(rec), nx=True)
        for index in (ALL, tenant_index(tenant), state_index(JobState.QUEUED)):
            pipe.zadd(index, {rec.id: now})
        publish_event(pipe, StatusEvent(job_id=rec.id, state=JobState.QUEUED, time=now))
        if not pipe.execute()[0]:  # 40 random bits collided: astronomically rare, but never overwrite
            return self.create(tenant, spec)
        return rec

    def get(self, job_id: str, summary: bool = True) -> JobRecord | None:
        if not job_id or len(job_id) > 200:
            return None
        raw = self.r.get(record_key(job_id))
        if raw is None:
            return None
        rec = JobRecord.model_validate_json(raw)
        if summary:
            rec.summary = read_summary(self.r, job_id)
        return rec

    def require(self, job_id: str) -> JobRecord:
        rec = self.get(job_id)
        if rec is None:
            raise JobNotFound(job_id)
        return rec

    def ids(self, state: JobState) -> list[str]:
        """Ids in one state, oldest first (the queue order for `queued`)."""
        return [i.decode() for i in self.r.zrange(state_index(state), 0, -1)]

    def count(self, state: JobState) -> int:
        return int(self.r.zcard(state_index(state)))

    def counts(self) -> dict[JobState, int]:
        pipe = self.r.pipeline(transaction=False)
        for s in JobState:
            pipe.zcard(state_index(s))
        return dict(zip(JobState, (int(n) for n in pipe.execute())))

    def list(
        self,
        tenant: str | None = None,
        states: Iterable[JobState] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[JobRecord], int]:
        """Newest first. Returns (page, total matching)."""
        wanted = set(states or ())
        index = tenant_index(tenant) if tenant is not None else ALL
        if not wanted:
            total = int(self.r.zcard(index))
            ids = [i.decode() for i in self.r.zrevrange(index, offset, offset + limit - 1)]
            return self._load(ids), total
        ids = [i.decode() for i in self.r.zrevrange(index, 0, -1)]
        matching = [r for r in self._load(ids, summary=False) if r.state in wanted]
        page = matching[offset : offset + limit]
        for r in page:
            r.summary = read_summary(self.r, r.id)
        return page, len(matching)

    def _load(self, ids: list[str], summary: bool = True) -> list[JobRecord]:
        if not ids:
            return []
        out = []
        for raw in self.r.mget([record_key(i) for i in ids]):
            if raw is not None:
                out.append(JobRecord.model_validate_json(raw))
        if summary:
            for rec in out:
                rec.summary = read_summary(self.r, rec.id)
        return out

    # ------------------------------------------------------------------ changes
    def mutate(self, job_id: str, change: Callable[[JobRecord], bool | None]) -> JobRecord:
        """Apply `change` to the current record atomically; it returns False to leave it untouched and may
        raise (e.g. InvalidTransition) to abort. Index moves and the status event follow a state change."""
        key = record_key(job_id)
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        raise JobNotFound(job_id)
                    rec = JobRecord.model_validate_json(raw)
                    before = rec.state
                    if change(rec) is False:
                        pipe.unwatch()
                        return rec
                    rec.updated_at = time.time()
                    if rec.state != before:
                        rec.state_times[rec.state] = rec.updated_at
                    pipe.multi()
                    pipe.set(key, self._dump(rec))
                    if rec.state != before:
                        pipe.zrem(state_index(before), job_id)
                        pipe.zadd(state_index(rec.state), {job_id: rec.created_at})
                        publish_event(
                            pipe,
                            StatusEvent(job_id=job_id, state=rec.state, error=rec.error, time=rec.updated_at),
                        )
                    pipe.execute()
                    return rec
                except redis.WatchError:
                    continue

    def transition(
        self, job_id: str, to: JobState, error: str | None = None, detail: str | None = None
    ) -> JobRecord:
        def change(rec: JobRecord) -> None:
            check_transition(rec.state, to)
            rec.state = to
            rec.error = error if error is not None else rec.error
            rec.detail = detail if detail is not None else to.value

        return self.mutate(job_id, change)

    def set_detail(self, job_id: str, detail: str | None, components: dict | None = None) -> JobRecord:
        """Record what the runner is waiting for; writes only when something changed."""

        def change(rec: JobRecord) -> bool:
            comps = rec.components if components is None else components
            if rec.detail == detail and rec.components == comps:
                return False
            rec.detail, rec.components = detail, comps
            return True

        return self.mutate(job_id, change)

    def request_cancel(self, job_id: str) -> JobRecord:
        """A queued job is cancelled at once; an active one is flagged and the runner tears it down."""

        def change(rec: JobRecord) -> bool:
            if rec.state.terminal:
                return False
            if rec.state == JobState.QUEUED:
                rec.state, rec.detail = JobState.CANCELLED, "cancelled before it started"
            else:
                rec.cancel_requested, rec.detail = True, "cancelling"
            return True

        return self.mutate(job_id, change)

    def set_queue_stats(self, job_id: str, stats: dict[str, int]) -> None:
        self.r.hset(summary_key(job_id), "queue", json.dumps(stats))

    @staticmethod
    def _dump(rec: JobRecord) -> str:
        return rec.model_dump_json(exclude={"summary"})
