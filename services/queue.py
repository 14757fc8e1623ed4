"""Trajectory queue on Redis Streams: one stream per job, a consumer group for the learners.

Guarantees (tested against a real redis-server):
- put is admitted atomically (Lua) and idempotent by trajectory id: a producer that retries after a lost
  reply never enqueues twice. When `max_len` entries wait undelivered the producer waits (back-pressure)
  and then gets QueueFull; nothing is ever trimmed or silently dropped.
- get delivers through the consumer group; entries a dead consumer held are re-delivered to a live one
  after `claim_idle_ms` (XAUTOCLAIM). An entry delivered `max_deliveries` times without an ack, or one
  that does not decode, goes to the job's dead-letter stream with the reason.
- ack (after the optimizer step that used the batch) removes entries for good (XACK + XDEL), so the
  stream length is exactly the work in flight. A consumer acks only entries it still owns.
- staleness: trajectories whose oldest token lags the learner by more than `max_staleness` versions are
  moved to the job's stale stream (policy 'drop') or delivered and counted (policy 'count').
- stall clock: how long each consumer has waited without a trainable delivery, kept in the stats hash so
  a restarted learner continues it (`add_stall` / `clear_stall`; `stats()["stalled_s"]`).
Keys share the `{job}` hash tag so the Lua scripts also work on Redis Cluster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import redis
from pydantic import BaseModel, ConfigDict, Field

from services import keys, metrics
from services.codec import CodecError, decode, encode
from services.jobspec import JobSpec
from services.queue_lua import ACK, MOVE, PUT, TOUCH
from services.schemas import Trajectory

log = logging.getLogger(__name__)

GROUP = "learners"
STALL = "stall:"  # stats-hash field prefix of a consumer's stall clock (seconds, a float)


class QueueConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_len: int = Field(10_000, ge=1, description="Undelivered entries at which producers must wait.")
    put_timeout_s: float = Field(30.0, ge=0, description="How long put waits for room before QueueFull.")
    claim_idle_ms: int = Field(
        60_000,
        ge=1,
        description="Pending this long => its consumer is presumed dead and the entry is re-delivered.",
    )
    max_deliveries: int = Field(3, ge=1, description="Deliveries without ack before dead-lettering.")
    max_staleness: int | None = Field(None, ge=0, description="Version lag bound; None disables.")
    stale_policy: Literal["drop", "count"] = "drop"
    stale_keep: int = Field(10_000, ge=0, description="Dropped-stale entries kept for inspection.")

    @classmethod
    def for_job(cls, spec: JobSpec, **overrides) -> QueueConfig:
        """The queue settings a JobSpec implies (its staleness bound and policy)."""
        a = spec.asynchrony
        return cls(max_staleness=a.max_staleness, stale_policy=a.stale_policy, **overrides)


class QueueFull(RuntimeError):
    """The stream stayed at max_len for the whole put timeout: the learner is not keeping up."""


@dataclass
class Item:
    entry_id: str
    trajectory: Trajectory
    deliveries: int = 1


@dataclass
class Batch:
    consumer: str
    items: list[Item] = field(default_factory=list)
    dead: int = 0  # entries moved to dead letters while assembling this batch
    stale: int = 0  # entries dropped (or, with policy 'count', delivered) as stale
    reclaimed: int = 0  # entries taken over from a consumer presumed dead

    @property
    def ids(self) -> list[str]:
        return [i.entry_id for i in self.items]

    @property
    def trajectories(self) -> list[Trajectory]:
        return [i.trajectory for i in self.items]

    def __len__(self) -> int:
        return len(self.items)


def _sid(eid: bytes | str) -> str:
    return eid.decode() if isinstance(eid, bytes) else eid


class TrajectoryQueue:
    def __init__(self, client: redis.Redis, job_id: str, config: QueueConfig | None = None):
        if not job_id or any(c in job_id for c in "{}: "):
            raise ValueError(f"job id {job_id!r} must be non-empty without braces, colons or spaces")
        self.r, self.job_id, self.cfg = client, job_id, config or QueueConfig()
        self.stream, self.dead_stream = keys.queue_stream(job_id), keys.queue_dead(job_id)
        self.stale_stream, self.ids_key = keys.queue_stale(job_id), keys.queue_ids(job_id)
        self.stats_key, self.version_key = keys.queue_stats(job_id), keys.learner_version(job_id)
        self._put = client.register_script(PUT)
        self._ack = client.register_script(ACK)
        self._move = client.register_script(MOVE)
        self._touch = client.register_script(TOUCH)
        self._cursor, self._last_reclaim = "0-0", float("-inf")
        self.ensure_group()

    def ensure_group(self) -> None:
        try:
            self.r.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    # ---------------------------------------------------------------- producer side
    def put(self, trajectory: Trajectory, timeout_s: float | None = None) -> str | None:
        """Enqueue one trajectory; returns its entry id (None if this id was admitted before)."""
        return self.put_many([trajectory], timeout_s)[0]

    def put_many(self, trajectories: list[Trajectory], timeout_s: float | None = None) -> list[str | None]:
        """Enqueue in order, waiting for room; raises QueueFull naming how many were not admitted."""
        for t in trajectories:
            if t.job_id != self.job_id:
                raise ValueError(f"trajectory {t.id} belongs to job {t.job_id!r}, not {self.job_id!r}")
        payloads = [(t.id, encode(t)) for t in trajectories]
        result: list[str | None] = [None] * len(payloads)
        todo = list(range(len(payloads)))
        timeout = self.cfg.put_timeout_s if timeout_s is None else timeout_s
        deadline, wait, waited_from = time.monotonic() + timeout, 0.005, None
        while True:
            argv: list = [self.cfg.max_len]
            for i in todo:
                argv += payloads[i]
            statuses = self._put(keys=[self.stream, self.ids_key, self.stats_key], args=argv)
            left = []
            for i, s in zip(todo, statuses):
                s = s.decode()
                if s.startswith("ok:"):
                    result[i] = s[3:]
                elif s == "full":
                    left.append(i)
                else:
                    metrics.QUEUE_DUPLICATES.labels(self.job_id).inc()
            metrics.QUEUE_PUT.labels(self.job_id).inc(len(todo) - len(left))
            todo = left
            if not todo:
                break
            now = time.monotonic()
            waited_from = waited_from or now
            if now >= deadline:
                metrics.QUEUE_PUT_WAIT.labels(self.job_id).observe(now - waited_from)
                raise QueueFull(
                    f"job {self.job_id}: {self.cfg.max_len} trajectories waited undelivered for "
                    f"{timeout:.1f}s; {len(todo)} of {len(payloads)} not admitted (is the learner "
                    f"running? raise max_len or the learner's throughput)"
                )
            time.sleep(min(wait, max(0.0, deadline - now)))
            wait = min(wait * 2, 0.5)
        if waited_from:
            metrics.QUEUE_PUT_WAIT.labels(self.job_id).observe(time.monotonic() - waited_from)
        return result

    # ---------------------------------------------------------------- consumer side
    def set_learner_version(self, version: int) -> None:
        self.r.set(self.version_key, int(version))

    def learner_version(self) -> int:
        v = self.r.get(self.version_key)
        return int(v) if v is not None else 0

    def get(
        self,
        consumer: str,
        count: int,
        block_ms: int = 1000,
        learner_version: int | None = None,
        holding: set[str] | frozenset[str] = frozenset(),
    ) -> Batch:
        """Up to `count` trajectories for `consumer`: re-deliveries from dead consumers first, then new ones.

        Blocks up to `block_ms` only when nothing at all is available. Keep block_ms below the client's
        socket timeout so a blocked read never looks like a dead server. `holding`: entry ids the consumer
        already has (its own entries idle past `claim_idle_ms`, e.g. during a long weight push, are
        reclaimed by it like a dead consumer's; they are not delivered again, nor judged stale).
        """
        batch = Batch(consumer)
        raw = [x for x in self._reclaim(consumer, count, batch) if _sid(x[0]) not in holding]
        # the learner version (when not given) and the new entries in one round trip
        pipe = self.r.pipeline(transaction=False)
        if learner_version is None:
            pipe.get(self.version_key)
        if len(raw) < count:
            block = None if raw else max(1, block_ms)
            pipe.xreadgroup(GROUP, consumer, {self.stream: ">"}, count=count - len(raw), block=block)
        replies = pipe.execute() if len(pipe) else []
        if learner_version is None:
            v = replies.pop(0)
            learner_version = int(v) if v is not None else 0
        for _, entries in (replies[0] if replies else None) or []:
            raw += [(eid, fields, 1) for eid, fields in entries]
        observe = metrics.QUEUE_STALENESS.labels(self.job_id).observe  # one label lookup per batch
        for eid, fields, deliveries in raw:
            self._admit(batch, _sid(eid), fields, deliveries, learner_version, observe)
        metrics.QUEUE_GET.labels(self.job_id).inc(len(batch))
        return batch

    def pending_of(self, consumer: str, count: int = 1000, learner_version: int | None = None) -> Batch:
        """Entries already delivered to `consumer` and never acked: what a learner restarted under the
        same name must train again (its previous incarnation's work on them was lost)."""
        batch = Batch(consumer)
        version = self.learner_version() if learner_version is None else learner_version
        resp = self.r.xreadgroup(GROUP, consumer, {self.stream: "0"}, count=count)
        for _, entries in resp or []:
            for eid, fields in entries:
                if fields:  # deleted entries show up with no fields
                    self._admit(batch, _sid(eid), fields, 1, version)
        return batch

    def _reclaim(self, consumer: str, count: int, batch: Batch) -> list[tuple]:
        out: list[tuple] = []
        # An entry becomes claimable only after claim_idle_ms, so scanning the PEL more often than a
        # quarter of that finds nothing new; skipping saves a round trip on most gets.
        now = time.monotonic()
        if self._cursor == "0-0" and now - self._last_reclaim < self.cfg.claim_idle_ms / 4000:
            return out
        self._last_reclaim = now
        # resume the PEL scan where the last call stopped: XAUTOCLAIM inspects a bounded slice per call
        resp = self.r.xautoclaim(
            self.stream, GROUP, consumer, self.cfg.claim_idle_ms, self._cursor, count=count
        )
        nxt = resp[0]
        self._cursor = nxt.decode() if isinstance(nxt, bytes) else nxt
        claimed = [(eid, f) for eid, f in resp[1] if f]  # Redis 6.2 lists deleted entries with nil fields
        if not claimed:
            return out
        pipe = self.r.pipeline(transaction=False)
        for eid, _ in claimed:
            pipe.xpending_range(self.stream, GROUP, min=eid, max=eid, count=1)
        for (eid, fields), info in zip(claimed, pipe.execute()):
            deliveries = info[0]["times_delivered"] if info else 1
            out.append((eid, fields, deliveries))
        batch.reclaimed += len(out)
        metrics.QUEUE_REDELIVERED.labels(self.job_id).inc(len(out))
        log.warning(
            "job %s: consumer %s took over %d entries from a consumer presumed dead",
            self.job_id,
            consumer,
            len(out),
        )
        return out

    def _admit(
        self, batch: Batch, eid: str, fields: dict, deliveries: int, version: int, observe=None
    ) -> None:
        if deliveries > self.cfg.max_deliveries:
            self._dead_letter(eid, f"delivered {deliveries} times without ack", deliveries)
            batch.dead += 1
            return
        try:
            traj = decode(fields[b"d"], Trajectory)
        except (CodecError, KeyError) as e:
            self._dead_letter(eid, f"undecodable: {e}", deliveries)
            batch.dead += 1
            return
        lag = traj.staleness(version)
        (observe or metrics.QUEUE_STALENESS.labels(self.job_id).observe)(lag)
        if self.cfg.max_staleness is not None and lag > self.cfg.max_staleness:
            batch.stale += 1
            metrics.QUEUE_STALE.labels(self.job_id).inc()
            if self.cfg.stale_policy == "drop":
                self._move(
                    keys=[self.stream, self.stale_stream, self.stats_key],
                    args=[
                        GROUP,
                        eid,
                        f"stale by {lag} versions (bound {self.cfg.max_staleness})",
                        deliveries,
                        "stale",
                        self.cfg.stale_keep,
                    ],
                )
                return
        batch.items.append(Item(eid, traj, deliveries))

    def _dead_letter(self, eid: str, reason: str, deliveries: int) -> None:
        log.error("job %s: entry %s moved to dead letters: %s", self.job_id, eid, reason)
        self._move(
            keys=[self.stream, self.dead_stream, self.stats_key],
            args=[GROUP, eid, reason, deliveries, "dead", 0],
        )
        metrics.QUEUE_DEAD.labels(self.job_id).inc()

    def touch(self, batch: Batch) -> list[str]:
        """Heartbeat for a long step: reset idle time of entries we still own; returns the lost ids."""
        if not batch.items:
            return []
        lost = self._touch(keys=[self.stream], args=[GROUP, batch.consumer, *batch.ids])
        return [i.decode() if isinstance(i, bytes) else i for i in lost]

    def ack(self, batch: Batch | Iterable[str], consumer: str | None = None) -> int:
        """Remove used entries for good; with a Batch only entries its consumer still owns are acked."""
        if isinstance(batch, Batch):
            ids, consumer = batch.ids, batch.consumer
        else:
            ids = list(batch)
        if not ids:
            return 0
        n = int(self._ack(keys=[self.stream, self.stats_key], args=[GROUP, consumer or "", "acked", *ids]))
        metrics.QUEUE_ACKED.labels(self.job_id).inc(n)
        if n < len(ids):
            log.warning(
                "job %s: %d of %d entries were no longer owned by %s (re-delivered elsewhere)",
                self.job_id,
                len(ids) - n,
                len(ids),
                consumer,
            )
        return n

    def add_stall(self, consumer: str, seconds: float) -> float:
        """Add to `consumer`'s time without a trainable delivery; returns its total (which survives a
        restart of the consumer: the learner's stall timeout counts across restarts)."""
        return float(self.r.hincrbyfloat(self.stats_key, STALL + consumer, max(0.0, seconds)))

    def clear_stall(self, consumer: str) -> None:
        """`consumer` got trainable data again: its stall clock restarts from zero."""
        self.r.hdel(self.stats_key, STALL + consumer)

    # ---------------------------------------------------------------- operations
    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        out = []
        for eid, f in self.r.xrange(self.dead_stream, count=count):
            out.append(
                {
                    "entry_id": eid.decode(),
                    "trajectory_id": f.get(b"t", b"").decode(),
                    "reason": f.get(b"reason", b"").decode(),
                    "deliveries": f.get(b"deliveries", b"0").decode(),
                }
            )
        return out

    def requeue_dead(self) -> int:
        """Give every dead letter that still decodes another chance (after fixing the learner)."""
        n = 0
        for eid, f in self.r.xrange(self.dead_stream):
            if b"d" in f:
                pipe = self.r.pipeline(transaction=True)
                pipe.xadd(self.stream, {b"t": f.get(b"t", b""), b"d": f[b"d"]})
                pipe.xdel(self.dead_stream, eid)
                pipe.hincrby(self.stats_key, "dead", -1)
                pipe.execute()
                n += 1
        return n

    def stats(self) -> dict[str, int]:
        """Depth (un-acked), pending (delivered, not acked), lag (not yet delivered) and counters."""
        pipe = self.r.pipeline(transaction=False)
        pipe.xlen(self.stream)
        pipe.xpending(self.stream, GROUP)
        pipe.xlen(self.dead_stream)
        pipe.hgetall(self.stats_key)
        depth, pending, dead_len, counters = pipe.execute()
        stalls = [float(v) for k, v in counters.items() if k.startswith(STALL.encode())]
        out = {k.decode(): int(v) for k, v in counters.items() if not k.startswith(STALL.encode())}
        out["stalled_s"] = int(max(stalls, default=0.0))  # the longest current wait without trainable data
        pending_n = int(pending["pending"]) if pending else 0
        out.update(depth=depth, pending=pending_n, lag=depth - pending_n, dead_letters=dead_len)
        for key in ("put", "acked", "dead", "stale"):
            out.setdefault(key, 0)
        metrics.QUEUE_DEPTH.labels(self.job_id).set(depth)
        metrics.QUEUE_PENDING.labels(self.job_id).set(pending_n)
        metrics.QUEUE_LAG.labels(self.job_id).set(depth - pending_n)
        return out

    def undelivered(self) -> int:
        """Entries put and not yet delivered to any learner (what rollouts may run ahead by)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.xlen(self.stream)
        pipe.xpending(self.stream, GROUP)
        depth, pending = pipe.execute()
        return int(depth) - (int(pending["pending"]) if pending else 0)

    def delete(self) -> None:
        """Remove every key of this job (after the job ended and its data is no longer needed)."""
        self.r.delete(
            self.stream, self.dead_stream, self.stale_stream, self.ids_key, self.stats_key, self.version_key
        )
