"""The job store in Redis: one record per job, indexes by tenant and state, the state machine.

Every change is an optimistic transaction (WATCH the record, MULTI/EXEC the new record, its index moves and,
when the state changes, a `status` event on the job's stream), so the API (cancel) and the runner never
overwrite each other and a client watching the events sees every transition exactly once.

Keys: `payoff:{<id>}:job` (names: services/keys.py) (record JSON, without the summary), `payoff:jobs` (zset
of every id by creation time), `payoff:jobs:tenant:<t>`, `payoff:jobs:state:<s>` and the tenant's unfinished
jobs `payoff:jobs:tenant:<t>:unfinished` (zsets, same scores). Redis runs with AOF, so a restarted gateway
finds every job where it was.

A record that fails to load (written by an older version, or a bug) is that job's problem only: `get` and
`mutate` raise `JobUnreadable` naming the job, `listing` reports it under `unreadable` beside the jobs that
load, and `quarantine` moves it out of the queued/starting/running indexes into `failed` (with a status
event giving the reason), so the runner and admission never trip over it again. Creation can enforce a
per-tenant cap on queued + starting + running jobs atomically (WATCH on the tenant's unfinished index).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis
from pydantic import BaseModel, Field, ValidationError

from services import keys
from services.jobs import (
    JobRecord,
    JobState,
    LogEvent,
    StatusEvent,
    check_transition,
    publish_event,
    read_summary,
    record_key,
    summary_key,
)
from services.jobspec import JobSpec

ALL = keys.JOBS_ALL
QUEUED = JobState.QUEUED
NOT_ENDED = (JobState.QUEUED, JobState.STARTING, JobState.RUNNING)


class JobNotFound(KeyError):
    pass


class JobUnreadable(Exception):
    """The job's stored record exists but does not load as a JobRecord."""

    def __init__(self, job_id: str, reason: str) -> None:
        self.job_id, self.reason = job_id, reason
        super().__init__(f"the stored record of job {job_id!r} cannot be read by this gateway: {reason}")


class TenantQuotaExceeded(Exception):
    def __init__(self, active: int, limit: int) -> None:
        self.active, self.limit = active, limit
        super().__init__(f"{active} jobs queued or running, limit {limit}")


class UnreadableRecord(BaseModel):
    """A job listed whose stored record does not load (see `JobUnreadable`)."""

    id: str
    state: str = Field(description="The state index that holds the job ('unknown' if none).")
    error: str


@dataclass
class Listing:
    jobs: list[JobRecord]
    total: int
    unreadable: list[UnreadableRecord] = field(default_factory=list)


def _problems(err: ValidationError) -> str:
    errs = err.errors(include_url=False, include_input=False)
    shown = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<record>'}: {e['msg']}" for e in errs[:3])
    return shown + (f" (and {len(errs) - 3} more)" if len(errs) > 3 else "")


def tenant_index(tenant: str) -> str:
    return keys.jobs_of_tenant(tenant)


def unfinished_index(tenant: str) -> str:
    """The tenant's jobs that have not ended (a superset: pruned when the count matters; see `_active_of`)."""
    return keys.unfinished_jobs_of_tenant(tenant)


def state_index(state: JobState) -> str:
    return keys.jobs_in_state(state.value)


def new_job_id(spec: JobSpec) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", spec.name.lower()).strip("-")[:40] or "job"
    return f"{slug}-{secrets.token_hex(5)}"


class JobStore:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    # ------------------------------------------------------------------ create / read
    def create(self, tenant: str, spec: JobSpec, max_active: int | None = None) -> JobRecord:
        """Store a new queued job. With `max_active`, refuse (TenantQuotaExceeded) when the tenant already
        has that many queued + starting + running jobs; concurrent creations are serialised on the index."""
        with self.r.pipeline(transaction=True) as pipe:
            while True:
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
                try:
                    pipe.watch(unfinished_index(tenant), record_key(rec.id))
                    if pipe.exists(record_key(rec.id)):  # 40 random bits collided: never overwrite
                        continue
                    active = 0 if max_active is None else self._active_of(pipe, tenant, max_active)
                    if max_active is not None and active >= max_active:
                        pipe.reset()
                        raise TenantQuotaExceeded(active, max_active)
                    pipe.multi()
                    pipe.set(record_key(rec.id), self._dump(rec), nx=True)
                    for index in (ALL, tenant_index(tenant), state_index(QUEUED), unfinished_index(tenant)):
                        pipe.zadd(index, {rec.id: now})
                    publish_event(pipe, StatusEvent(job_id=rec.id, state=JobState.QUEUED, time=now))
                    pipe.execute()
                    return rec
                except redis.WatchError:
                    continue

    @staticmethod
    def _active_of(client, tenant: str, limit: int = 0) -> int:
        """Unfinished jobs of `tenant`: the size of its unfinished index, O(1) while under `limit`; at the
        limit the index is checked against the state indexes and entries of ended jobs are pruned (inside
        `create`'s WATCH that aborts the transaction once, and the retry sees the pruned index)."""
        index = unfinished_index(tenant)
        n = int(client.zcard(index))
        if n < limit:
            return n
        ids = client.zrange(index, 0, -1)
        if not ids:
            return 0
        alive = [False] * len(ids)
        for s in NOT_ENDED:
            alive = [a or score is not None for a, score in zip(alive, client.zmscore(state_index(s), ids))]
        stale = [i for i, a in zip(ids, alive) if not a]
        if stale:
            client.zrem(index, *stale)
        return len(ids) - len(stale)

    def active_count(self, tenant: str) -> int:
        """Queued + starting + running jobs of `tenant`."""
        return self._active_of(self.r, tenant)

    def owned_by(self, job_id: str, tenant: str) -> bool:
        """Whether `tenant` submitted `job_id` (from the tenant index: works for unreadable records too)."""
        if not job_id or len(job_id) > 200:
            return False
        return self.r.zscore(tenant_index(tenant), job_id) is not None

    @staticmethod
    def _parse(job_id: str, raw: bytes) -> JobRecord:
        try:
            return JobRecord.model_validate_json(raw)
        except ValidationError as e:
            raise JobUnreadable(job_id, _problems(e)) from None

    def get(self, job_id: str, summary: bool = True) -> JobRecord | None:
        """The record, None if there is none; JobUnreadable if it exists but does not load."""
        if not job_id or len(job_id) > 200:
            return None
        raw = self.r.get(record_key(job_id))
        if raw is None:
            return None
        rec = self._parse(job_id, raw)
        if summary:
            rec.summary = read_summary(self.r, job_id)
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
        """Newest first. Returns (page, total matching); see `listing` for the unreadable records too."""
        found = self.listing(tenant, states, limit, offset)
        return found.jobs, found.total

    def listing(
        self,
        tenant: str | None = None,
        states: Iterable[JobState] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Listing:
        """Newest first: the page's records that load, the total matching, and the page's unreadable ones
        (which count in `total`; with a state filter they match by the state index that holds them)."""
        wanted = set(states or ())
        index = tenant_index(tenant) if tenant is not None else ALL
        if not wanted:
            total = int(self.r.zcard(index))
            ids = [i.decode() for i in self.r.zrevrange(index, offset, offset + limit - 1)]
            return self._split(self._load(ids), total)
        ids = [i.decode() for i in self.r.zrevrange(index, 0, -1)]
        matching = [r for r in self._load(ids, summary=False) if r.state in wanted]
        page = matching[offset : offset + limit]
        for r in page:
            if isinstance(r, JobRecord):
                r.summary = read_summary(self.r, r.id)
        return self._split(page, len(matching))

    @staticmethod
    def _split(items: list[JobRecord | UnreadableRecord], total: int) -> Listing:
        jobs = [r for r in items if isinstance(r, JobRecord)]
        return Listing(jobs, total, [r for r in items if isinstance(r, UnreadableRecord)])

    def indexed_state(self, job_id: str) -> JobState | None:
        """The state whose index holds `job_id` (the runner's view; also for unreadable records)."""
        pipe = self.r.pipeline(transaction=False)
        for s in JobState:
            pipe.zscore(state_index(s), job_id)
        return next((s for s, score in zip(JobState, pipe.execute()) if score is not None), None)

    def _load(self, ids: list[str], summary: bool = True) -> list[JobRecord | UnreadableRecord]:
        if not ids:
            return []
        out: list[JobRecord | UnreadableRecord] = []
        for job_id, raw in zip(ids, self.r.mget([record_key(i) for i in ids])):
            if raw is None:
                continue
            try:
                rec = self._parse(job_id, raw)
            except JobUnreadable as e:
                state = self.indexed_state(job_id)
                out.append(
                    UnreadableRecord(id=job_id, state=state.value if state else "unknown", error=str(e))
                )
                continue
            if summary:
                rec.summary = read_summary(self.r, rec.id)
            out.append(rec)
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
                    rec = self._parse(job_id, raw)
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
                        if rec.state.terminal:
                            pipe.zrem(unfinished_index(rec.tenant), job_id)
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

    def quarantine(self, job_id: str, reason: str) -> bool:
        """Fail a job whose record does not load: move it from the queued/starting/running index to
        `failed`, stamp the reason into the raw record where it is a JSON object (its other content is
        kept as found), and publish the `failed` status event. False if there was nothing to move (the
        record loads, is gone, or the job had already ended)."""
        key = record_key(job_id)
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    held = [s for s in NOT_ENDED if pipe.zscore(state_index(s), job_id) is not None]
                    if raw is None or not held or _loads(raw):
                        pipe.reset()
                        return False
                    now = time.time()
                    created = pipe.zscore(ALL, job_id) or now
                    patched = _stamp_failed(raw, reason, now)
                    pipe.multi()
                    for s in held:
                        pipe.zrem(state_index(s), job_id)
                    pipe.zadd(state_index(JobState.FAILED), {job_id: created})
                    if patched is not None:
                        pipe.set(key, patched)
                    for event in (
                        StatusEvent(job_id=job_id, state=JobState.FAILED, error=reason, time=now),
                        LogEvent(job_id=job_id, level="error", source="runner", message=reason),
                    ):
                        publish_event(pipe, event)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def set_queue_stats(self, job_id: str, stats: dict[str, int]) -> None:
        self.r.hset(summary_key(job_id), "queue", json.dumps(stats))

    @staticmethod
    def _dump(rec: JobRecord) -> str:
        return rec.model_dump_json(exclude={"summary"})


def _loads(raw: bytes) -> bool:
    try:
        JobRecord.model_validate_json(raw)
        return True
    except ValidationError:
        return False


def _stamp_failed(raw: bytes, reason: str, now: float) -> str | None:
    """The raw record with state `failed` and the reason, if it is a JSON object; else None (left as is)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    times = data.get("state_times") if isinstance(data.get("state_times"), dict) else {}
    data.update(state="failed", error=reason, detail="failed", updated_at=now)
    data["state_times"] = {**times, "failed": now}
    return json.dumps(data)
