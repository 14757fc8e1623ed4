"""Every Redis key name payoff uses, in one place.

Invariant: all keys of one job carry the same hash tag `{<job id>}` (`payoff:{job}:...`), so on Redis
Cluster a job's trajectory stream, its id set, its events, its summary and its weight-sync keys live in one
slot and the queue's Lua scripts (which touch several of them atomically) stay legal. Keys that are not
per-job (the job index, API keys, the runner lease, rate-limit buckets) have no hash tag and are only
touched one at a time. Nothing else in the code base spells a `payoff:` key.
"""

from __future__ import annotations

PREFIX = "payoff"


def job_base(job_id: str) -> str:
    """`payoff:{<job id>}`: the prefix of every per-job key (one Redis Cluster slot per job)."""
    return f"{PREFIX}:{{{job_id}}}"


# ---------------------------------------------------------------- per job: lifecycle (services/jobs.py)
def job_record(job_id: str) -> str:
    return f"{job_base(job_id)}:job"


def job_events(job_id: str) -> str:
    return f"{job_base(job_id)}:events"


def job_summary(job_id: str) -> str:
    return f"{job_base(job_id)}:summary"


# ---------------------------------------------------------------- per job: trajectory queue (services/queue.py)
def queue_stream(job_id: str) -> str:
    return f"{job_base(job_id)}:traj"


def queue_dead(job_id: str) -> str:
    return f"{job_base(job_id)}:dead"


def queue_stale(job_id: str) -> str:
    return f"{job_base(job_id)}:stale"


def queue_ids(job_id: str) -> str:
    return f"{job_base(job_id)}:ids"


def queue_stats(job_id: str) -> str:
    return f"{job_base(job_id)}:stats"


def learner_version(job_id: str) -> str:
    """The policy version the learner last published (read by the staleness bound and the orchestrator)."""
    return f"{job_base(job_id)}:version"


# ---------------------------------------------------------------- per job: weight sync (services/weights/)
def weight_replicas(job_id: str) -> str:
    """Hash: replica id → JSON registration / heartbeat / apply status."""
    return f"{job_base(job_id)}:replicas"


def weight_stream(job_id: str) -> str:
    """Stream of push announcements (manifest + rendezvous) from the learner to the replicas."""
    return f"{job_base(job_id)}:weights"


# ---------------------------------------------------------------- global (gateway)
JOBS_ALL = f"{PREFIX}:jobs"  # zset of every job id by creation time
API_KEYS = f"{PREFIX}:apikeys"
API_KEY_IDS = f"{PREFIX}:apikeys:ids"
RUNNER_LEASE = f"{PREFIX}:runner:lease"


def jobs_of_tenant(tenant: str) -> str:
    return f"{PREFIX}:jobs:tenant:{tenant}"


def unfinished_jobs_of_tenant(tenant: str) -> str:
    """Zset of a tenant's queued/starting/running jobs (the per-tenant concurrent-jobs quota)."""
    return f"{PREFIX}:jobs:tenant:{tenant}:unfinished"  # tenants have no ':' in their names


def jobs_in_state(state: str) -> str:
    return f"{PREFIX}:jobs:state:{state}"


def rate_limit(key_id: str) -> str:
    return f"{PREFIX}:ratelimit:{key_id}"


# ---------------------------------------------------------------- per evaluation (services/eval_store.py)
EVALS_ALL = f"{PREFIX}:evals"  # zset of every evaluation id by creation time


def evals_of_tenant(tenant: str) -> str:
    return f"{PREFIX}:evals:tenant:{tenant}"


def eval_record(eval_id: str) -> str:
    return f"{PREFIX}:{{eval-{eval_id}}}:eval"


def eval_events(eval_id: str) -> str:
    return f"{PREFIX}:{{eval-{eval_id}}}:events"


def eval_report(eval_id: str) -> str:
    """The full report (EvalReport JSON, with per-sample welfare)."""
    return f"{PREFIX}:{{eval-{eval_id}}}:report"
