"""CPU resources that mean what they say: intra-op threads and CPU affinity from the JobSpec.

A rollout replica with `cpus_per_replica: c` and a learner worker with `cpus_per_worker: c` run
`max(1, floor(c))` torch intra-op threads and, where the host has enough cores for the whole job, are
pinned to their own cores — the CPU analogue of disjoint GPU pools. The same split applies in sync and
async mode (the sync baseline is neither handicapped nor given more).

Invariants:
- rollout replicas take cores from the bottom of the cores this process may use (0, 1, …) by replica slot; learner workers take
  them from the top (N-1, N-2, …) by rank, so one job's two pools are disjoint whenever
  `replicas·threads + workers·threads ≤ N`; when they would overlap, nothing is pinned (threads still
  apply) and `plan` says why;
- pinning covers every thread of the process (each task in /proc/self/task), so threads started before
  the call (Ray's, torch's pool) move too; threads started later inherit it;
- `PAYOFF_CPU_AFFINITY=0` turns pinning off (threads stay bounded).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)


def threads_for(cpus: float) -> int:
    """Intra-op threads for a process holding `cpus` CPUs (a fraction still runs one thread)."""
    return max(1, math.floor(cpus + 1e-9))


@dataclass(frozen=True)
class CorePlan:
    cores: tuple[int, ...] | None  # None: do not pin
    threads: int
    reason: str


def plan(
    role: str, cpus: float, slot: int, rollout_cores: int, learner_cores: int, host_cpus: int | None = None
) -> CorePlan:
    """Where one process of a job runs. `role` is "rollout" or "learner", `slot` its replica slot or
    rank; `rollout_cores` / `learner_cores` are the whole job's pools (processes × threads each)."""
    if role not in ("rollout", "learner"):
        raise ValueError(f"role must be 'rollout' or 'learner', not {role!r}")
    avail = _available(host_cpus)
    n = len(avail)
    k = threads_for(cpus)
    need = rollout_cores + learner_cores
    if os.environ.get("PAYOFF_CPU_AFFINITY", "1") == "0":
        return CorePlan(None, k, "pinning disabled by PAYOFF_CPU_AFFINITY=0")
    if need > n:
        return CorePlan(None, k, f"the job needs {need} cores for disjoint pools, the host has {n}")
    pool = rollout_cores if role == "rollout" else learner_cores
    first = (slot * k) % max(k, pool - pool % k or k)
    if role == "rollout":
        cores = tuple(avail[i] for i in range(first, first + k))
    else:
        cores = tuple(avail[n - 1 - i] for i in range(first, first + k))
    return CorePlan(cores, k, f"{role} slot {slot}: cores {list(cores)}")


def job_pools(spec) -> tuple[int, int]:
    """(rollout cores, learner cores) of a JobSpec's CPU pools."""
    r, ln = spec.rollout, spec.learner
    return r.replicas * threads_for(r.cpus_per_replica), ln.workers * threads_for(ln.cpus_per_worker)


def apply(p: CorePlan) -> CorePlan:
    """Set torch's intra-op threads and pin every thread of this process; returns the plan applied (with
    `cores` None if pinning failed, e.g. the cores are outside this container's cpuset)."""
    import torch

    torch.set_num_threads(p.threads)
    if p.cores is None or not hasattr(os, "sched_setaffinity"):
        return p
    try:
        for tid in _threads():
            try:
                os.sched_setaffinity(tid, p.cores)
            except ProcessLookupError:  # the thread ended meanwhile
                pass
    except OSError as e:
        log.warning("could not pin to cores %s: %s; running unpinned", list(p.cores), e)
        return CorePlan(None, p.threads, f"pinning failed: {e}")
    log.info("pinned to cores %s with %d intra-op thread(s)", list(p.cores), p.threads)
    return p


def _available(host_cpus: int | None) -> list[int]:
    """The cores this process may run on (a container's cpuset, not the node's count)."""
    if host_cpus is not None:
        return list(range(host_cpus))
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def current() -> dict[str, object]:
    """What this process runs with now (for events and tests)."""
    import torch

    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"threads": torch.get_num_threads(), "cores": cores}


def pin_replica(
    job_id: str | None, redis_url: str | None, cpus: float, replicas: int, learner_cores: int
) -> CorePlan:
    """A rollout replica's plan, applied: its slot is the job's replica counter in Redis, so replicas of
    one job take different cores (a restarted replica takes the next slot, modulo the pool). Without a
    job, or when Redis cannot be reached, threads are bounded and nothing is pinned."""
    k = threads_for(cpus)
    if not (job_id and redis_url and learner_cores):
        return apply(CorePlan(None, k, "not part of a job's pools"))
    from services.config import data_plane_client
    from services.keys import job_base

    try:
        slot = int(data_plane_client(redis_url).incr(f"{job_base(job_id)}:affinity:rollout")) - 1
    except Exception as e:  # no slot, no pinning: the replica still serves
        log.warning("no CPU slot for the replica (%s): running unpinned", e)
        return apply(CorePlan(None, k, f"no slot: {e}"))
    return apply(plan("rollout", cpus, slot, replicas * k, learner_cores))
