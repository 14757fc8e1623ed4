"""The replica's sync gate (pure logic): a job request waits for the learner's weights, then gets a
retryable 503; never generates behind the learner's published version minus the allowed lag."""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi import HTTPException

from rollout.sync_gate import SyncGate


class Versions:
    def __init__(self, engine: int, learner: int):
        self.engine, self.learner = engine, learner


def gate(v: Versions, **kw) -> SyncGate:
    return SyncGate(lambda: v.engine, lambda: v.learner, poll_s=0.01, **kw)


def test_in_sync_or_within_the_lag_passes_at_once():
    v = Versions(engine=3, learner=3)
    g = gate(v, wait_s=5)
    asyncio.run(g.wait())
    assert g.synced is True and g.target == 3
    v.learner = 5  # push_weights_every 3: the replicas hold the push of v3 until v6
    asyncio.run(gate(v, lag=2, wait_s=5).wait())
    v.engine = 7  # ahead (a learner resumed from an older checkpoint): nothing to wait for
    asyncio.run(gate(v, wait_s=5).wait())


def test_a_replica_behind_waits_for_the_sync():
    v = Versions(engine=0, learner=12)  # restarted by Serve at the base model
    g = gate(v, wait_s=10)

    async def sync_later():
        await asyncio.sleep(0.2)
        v.engine = 12  # the learner's catch-up push landed

    async def both():
        t0 = time.monotonic()
        await asyncio.gather(g.wait(), sync_later())
        return time.monotonic() - t0

    assert 0.2 <= asyncio.run(both()) < 5 and g.synced and g.refused == 0


def test_still_behind_after_the_wait_is_a_retryable_503():
    v = Versions(engine=0, learner=12)
    g = gate(v, wait_s=0.2)
    with pytest.raises(HTTPException) as err:
        asyncio.run(g.wait())
    assert err.value.status_code == 503 and err.value.headers["Retry-After"]
    assert "at policy v0" in err.value.detail and "learner's v12" in err.value.detail
    assert g.synced is False and g.refused == 1


def test_an_unreadable_learner_version_is_a_503():
    def down() -> int:
        raise ConnectionError("Redis is restarting")

    g = SyncGate(lambda: 0, down, wait_s=5)
    with pytest.raises(HTTPException) as err:
        asyncio.run(g.wait())
    assert err.value.status_code == 503 and "Redis is restarting" in err.value.detail
