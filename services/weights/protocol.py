"""Weight-sync protocol between the learner (WeightSender, here) and rollout replicas (WeightReceiver,
services/weights/receiver.py).

Control plane: Redis, already shared by both sides and surviving restarts. A replica registers and
heartbeats in the hash `keys.weight_replicas(job)` (its version, apply status and a registration nonce,
new at every start). A push is announced on the stream `keys.weight_stream(job)` with the manifest
(WeightVersion: names, shapes, dtypes, buckets), the backend, the transport's name and, per target
replica, what that transport needs to reach it (rendezvous port, group id) plus the nonce the sender saw,
and the aliases (tensors the sender's list names twice, sent once: services/weights/packing.py).
The replica answers through its hash record (version and status after the apply, and its time account).
Data plane: a transport from services/weights/transports moves the buckets (large tensors alone, from
their own memory; small ones packed) and a checksum trailer over a standalone two-member
torch.distributed group per replica (gloo on CPU, NCCL on GPU).

Invariants:
  - a replica applies a version only after every bucket arrived and every checksum matched; until its
    next good sync a failed one leaves it unhealthy (its Serve health check then fails);
  - one group per replica isolates failures: a dead or slow replica times out alone, is reported in
    PushResult.failed, and is included again (full weights) in the next push once it has heartbeated (or
    re-registered) since: a replica killed with SIGKILL, whose record still looks live for
    `live_after_s`, costs one failed push, not a rendezvous timeout at every push;
  - every wait has a timeout (`timeout_s`: the rendezvous, each bucket, the apply ack), so the learner
    never blocks forever; a push takes at most about (buckets + 3) x timeout_s, whatever the replicas do;
    the ack wait also ends once the replica's heartbeat has not moved for `live_after_s` (it died after
    the data landed);
  - pushes are sequential: an announcement supersedes every earlier one (whose push is over), so a
    replica that fell behind handles only the newest one addressed to it, and ignores one addressed to
    a previous registration of its id (another nonce).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import redis
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services import keys
from services.codec import encode
from services.schemas import TensorMeta, WeightVersion
from services.weights.packing import (
    TRAILER,
    Named,
    dedupe,
    digest,
    direct,
    grouped,
    num_buckets,
    pack,
    plan_buckets,
)
from services.weights.transports import get_transport
from services.weights.transports.base import BucketFeed, Info, resolve_backend


class WeightSyncConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transport: str = Field(
        "persistent",
        description="Data plane: a name in services.weights.TRANSPORTS "
        "(persistent: one group per replica, reused; per_push: a new group per push).",
    )
    backend: str = Field("auto", pattern="^(auto|gloo|nccl)$")
    bucket_mb: float = Field(
        64.0, gt=0, description="Smaller tensors are packed into buckets of about this size."
    )
    direct_mb: float = Field(
        1.0,
        gt=0,
        description="A tensor of at least this size travels from its own memory as a message of its own "
        "(no packing copy); at most bucket_mb.",
    )
    timeout_s: float = Field(60.0, gt=0, description="Rendezvous, each bucket, and the apply ack.")
    host: str = Field("127.0.0.1", description="Address replicas use to reach the sender.")
    heartbeat_s: float = Field(2.0, gt=0)
    live_after_s: float = Field(10.0, gt=0, description="A replica silent this long is not pushed to.")

    @field_validator("transport")
    @classmethod
    def _known_transport(cls, v: str) -> str:
        get_transport(v)  # ValueError naming the choices
        return v


@dataclass
class PushResult:
    version: int
    ok: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bytes: int = 0
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # rendezvous, transfer (pack+send+apply+ack)
    # the time account: overlapping sender sub-phases (plan, announce, pack, checksum, send, ack; seconds,
    # send and ack the slowest replica's) and each acknowledging replica's own (see WeightReceiver.timing)
    account: dict[str, float] = field(default_factory=dict)
    replicas: dict[str, dict[str, float]] = field(default_factory=dict)


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _beat_of(record: dict) -> tuple:
    return record.get("heartbeat"), record.get("nonce")


# ---------------------------------------------------------------- sender (learner rank 0)
class WeightSender:
    def __init__(self, client: redis.Redis, job_id: str, config: WeightSyncConfig | None = None):
        self.r, self.job_id, self.cfg = client, job_id, config or WeightSyncConfig()
        self.replicas_key, self.stream = keys.weight_replicas(job_id), keys.weight_stream(job_id)
        self.transport = get_transport(self.cfg.transport).sender(self.cfg.host, self.cfg.timeout_s)
        self._buffers: dict[int, torch.Tensor] = {}  # packed buckets by index, reused push after push
        self._plan: tuple = ((), [])  # (what it was planned for, the metas): the same layout every push
        self._failed_at: dict[str, tuple] = {}  # replica -> its (heartbeat, nonce) after a push it missed

    def live_replicas(self) -> dict[str, dict]:
        return self._live(self._records())

    def _records(self) -> dict[str, dict]:
        return {rid.decode(): json.loads(raw) for rid, raw in self.r.hgetall(self.replicas_key).items()}

    def _live(self, records: dict[str, dict]) -> dict[str, dict]:
        now = time.time()
        return {
            rid: info
            for rid, info in records.items()
            if now - info.get("heartbeat", 0) <= self.cfg.live_after_s
        }

    def close(self) -> None:
        """Release the transport's groups (persistent ones otherwise live as long as the process)."""
        self.transport.close()

    def push(
        self, named: Named, version: int, step: int = 0, replicas: list[str] | None = None
    ) -> PushResult:
        """Broadcast `named` to every live replica (or to `replicas`); returns who applied version
        `version` and who failed, and why."""
        t0 = time.perf_counter()
        records = self._records()
        live = self._live(records)
        targets = sorted(live) if replicas is None else list(replicas)
        self.transport.retain(set(live) | set(targets))
        result = PushResult(version)
        if not targets:
            return result
        device = named[0][1].device
        backend = resolve_backend(self.cfg.backend, device)
        named, aliases = dedupe(named)  # tied weights travel once
        metas = self._metas(named)
        n_buckets = num_buckets(metas)
        # checksums travel in a trailer after the data, so packing + checksumming bucket b+1 overlaps
        # the transfer of bucket b
        manifest = WeightVersion(
            job_id=self.job_id,
            version=version,
            step=step,
            tensors=metas,
            num_buckets=n_buckets,
            checksum=TRAILER,
        )
        t_prep = time.perf_counter()
        rendezvous = self._prepare(targets, records, backend, result)
        if rendezvous:
            self._announce(manifest, backend, rendezvous, aliases)
        t_run = time.perf_counter()
        buckets = BucketFeed(n_buckets + 1, self.cfg.timeout_s)  # the last "bucket" is the trailer
        errors = self._run(named, metas, device, buckets, list(rendezvous), version, result)
        t_end = time.perf_counter()
        result.phases = {"rendezvous": t_run - t_prep, "transfer": t_end - t_run}
        result.account.update(plan=t_prep - t0, announce=t_run - t_prep)
        for rid in targets:  # in target order; those that failed in prepare are already in `failed`
            if rid in errors and errors[rid]:
                result.failed[rid] = errors[rid]  # type: ignore[assignment]
            elif rid in errors:
                result.ok.append(rid)
        self._remember(result, skipped=set(targets) - set(rendezvous))
        result.bytes = sum(m.nbytes for m in metas) * len(rendezvous)  # on the wire: aliases once
        result.seconds = time.perf_counter() - t0
        return result

    def _metas(self, named: Named) -> list[TensorMeta]:
        """The bucket plan, computed again only when the names, shapes, dtypes or bucket size change."""
        bucket, direct = (
            int(self.cfg.bucket_mb * 2**20),
            int(min(self.cfg.direct_mb, self.cfg.bucket_mb) * 2**20),
        )
        key = (bucket, direct, tuple((n, t.shape, t.dtype) for n, t in named))
        if key != self._plan[0]:
            self._plan = key, plan_buckets(named, bucket, direct)
        return self._plan[1]

    def _prepare(
        self, targets: list[str], records: dict[str, dict], backend: str, result: PushResult
    ) -> dict[str, Info]:
        out: dict[str, Info] = {}
        for rid in targets:
            record = records.get(rid, {})
            if rid in self._failed_at and self._failed_at[rid] == _beat_of(record):
                result.failed[rid] = "skipped: no heartbeat since the push it missed (is its process gone?)"
                continue
            try:
                out[rid] = {**self.transport.prepare(rid, record, backend), "nonce": record.get("nonce")}
            except Exception as e:  # e.g. no free port: this replica fails, the others go ahead
                result.failed[rid] = _error(e)
        return out

    def _remember(self, result: PushResult, skipped: set[str]) -> None:
        """Note the heartbeat of each replica that missed this push without answering (an apply that it
        reported failed means it is alive); it is pushed to again once that changes."""
        for rid in result.ok:
            self._failed_at.pop(rid, None)
        for rid, why in result.failed.items():
            if rid not in skipped and not why.startswith("failed v"):
                raw = self.r.hget(self.replicas_key, rid)
                self._failed_at[rid] = _beat_of(json.loads(raw) if raw else {})

    def _announce(
        self, manifest: WeightVersion, backend: str, rendezvous: dict[str, Info], aliases: list
    ) -> None:
        self.r.xadd(
            self.stream,
            {
                "manifest": encode(manifest),
                "backend": backend,
                "host": self.cfg.host,
                "transport": self.transport.name,
                "rendezvous": json.dumps(rendezvous),
                "aliases": json.dumps(aliases),  # [position, name, source]: tensors sent once
            },
            maxlen=100,
            approximate=True,
        )

    def _run(
        self,
        named: Named,
        metas: list[TensorMeta],
        device: torch.device,
        buckets: BucketFeed,
        rids: list[str],
        version: int,
        result: PushResult,
    ) -> dict[str, str | None]:
        """Send to every replica on its own thread while this one packs; rid -> error (None: applied)."""
        if not rids:
            return {}
        n = len(buckets.items)
        times: dict[str, dict[str, float]] = {rid: {} for rid in rids}  # each thread writes its own
        with ThreadPoolExecutor(max_workers=min(16, len(rids))) as pool:
            futures = {
                rid: pool.submit(self._send_one, rid, buckets, n, version, times[rid], result) for rid in rids
            }
            try:
                self._pack(named, metas, device, buckets, result.account)
            except BaseException:
                buckets.abort()  # the send threads fail at once instead of waiting for a bucket
                raise
            errors = {rid: fut.result() for rid, fut in futures.items()}
        for phase in ("send", "ack"):
            result.account[phase] = max(t.get(phase, 0.0) for t in times.values())
        return errors

    def _pack(
        self,
        named: Named,
        metas: list[TensorMeta],
        device: torch.device,
        buckets: BucketFeed,
        account: dict[str, float],
    ) -> None:
        n_buckets = len(buckets.items) - 1
        old, self._buffers = self._buffers, {}
        sums = torch.zeros((n_buckets, 2), dtype=torch.int64)
        t_pack = t_sum = 0.0
        for b, tensors in enumerate(grouped(named, metas)):
            t0 = time.perf_counter()
            buf = direct(tensors)  # one tensor: sent from its own memory (never reused as a buffer)
            if buf is None:
                buf = self._buffers[b] = pack(tensors, old.get(b))
            buckets.put(b, buf)
            t1 = time.perf_counter()
            sums[b] = torch.tensor(digest(buf))
            t_pack, t_sum = t_pack + t1 - t0, t_sum + time.perf_counter() - t1
        buckets.put(n_buckets, sums.to(device))
        account.update(pack=t_pack, checksum=t_sum)

    def _send_one(
        self, rid: str, buckets: BucketFeed, n: int, version: int, times: dict, result: PushResult
    ) -> str | None:
        ok = False
        try:
            t0 = time.perf_counter()
            self.transport.send(rid, buckets.get, n)
            t1 = time.perf_counter()
            err = self._await_ack(rid, version, result)
            times.update(send=t1 - t0, ack=time.perf_counter() - t1)
            ok = err is None
            return err
        except Exception as e:  # a dead replica must not stop the others
            return _error(e)
        finally:
            self.transport.finish(rid, ok)

    def _await_ack(self, rid: str, version: int, result: PushResult) -> str | None:
        """Poll the replica's record for the apply; give up at `timeout_s`, or once its heartbeat (written
        by its own thread, also during a long apply) has not moved for `live_after_s`: it is gone."""
        start = time.monotonic()
        deadline, pause = start + self.cfg.timeout_s, 0.00025
        beat, beat_at = None, start
        while time.monotonic() < deadline:
            raw = self.r.hget(self.replicas_key, rid)
            info = json.loads(raw) if raw else {}
            if info.get("version", -1) >= version and info.get("status") == "ok":
                timing = info.get("timing") or {}
                if timing.pop("version", None) == version:
                    result.replicas[rid] = timing
                return None
            if info.get("status", "").startswith("failed") and info.get("attempted") == version:
                return info["status"]
            if info.get("heartbeat") != beat:
                beat, beat_at = info.get("heartbeat"), time.monotonic()
            elif time.monotonic() - beat_at > self.cfg.live_after_s:
                return f"no apply acknowledgement for v{version}: no heartbeat for {self.cfg.live_after_s:g}s"
            time.sleep(pause)  # every 2 ms while an apply typically lands (0.5 s), then every 20 ms
            pause = min(2 * pause, 0.002 if time.monotonic() - start < 0.5 else 0.02)
        return f"no apply acknowledgement for v{version} within {self.cfg.timeout_s}s"
