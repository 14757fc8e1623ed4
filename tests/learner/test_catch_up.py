"""A replica restarted mid-job is caught up by the waiting learner (real engines, Redis, weight pushes),
and a learner that gets nothing trainable fails with the reason after a warning event instead of
spinning — with its stall clock kept across a restart."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from learner.trainer import Learner, LearnerConfig, LearnerError
from rollout.engine import make_engine
from services.jobs import LogEvent, read_events
from services.queue import QueueConfig
from services.weights import WeightReceiver, WeightSyncConfig
from tests.learner.welfare_game import produce_group

SYNC = WeightSyncConfig(timeout_s=20, heartbeat_s=0.2)


def config(job_id, redis_url, model, tmp_path, **kw) -> LearnerConfig:
    base = dict(
        job_id=job_id,
        redis_url=redis_url,
        model=model,
        algorithm="grpo",
        batch_size=8,
        group_size=4,
        learning_rate=1e-2,
        steps=3,
        checkpoint_every=100,
        checkpoint_dir=str(tmp_path / "ckpt"),
        weight_sync=SYNC,
        queue=QueueConfig(max_len=256, max_staleness=1),
        get_timeout_s=60,
        catch_up_every_s=0.5,
    )
    return LearnerConfig(**(base | kw))


def replica(redis_client, job_id, rid, model):
    engine = make_engine("transformers", model, threads=1)
    receiver = WeightReceiver(
        redis_client, job_id, rid, config=SYNC, apply=lambda named, v: engine.load_weights(named, v, "keep")
    ).start()
    return engine, receiver


def test_restarted_replica_gets_the_learners_policy_before_it_produces(
    redis_url, redis_client, job_id, tiny_model_path, tmp_path
):
    """train_layers=1: only the top block and the final norm are pushed, so the restarted replica (the
    base model) + the catch-up push must equal the learner's whole policy, tensor for tensor."""
    learner = Learner(config(job_id, redis_url, tiny_model_path, tmp_path, train_layers=1))
    engine, receiver = replica(redis_client, job_id, "replica-a", tiny_model_path)
    for g in range(4):
        produce_group(engine, learner.queue, job_id, group_size=4, seed=g)
    learner.run(steps=2)
    assert engine.version == learner.version == 2
    receiver.stop()  # the replica dies; Serve starts a new one from the base model
    engine, receiver = replica(redis_client, job_id, "replica-b", tiny_model_path)
    assert engine.version == 0
    base = {n: t.clone() for n, t in engine.model.state_dict().items()}
    produced = threading.Event()

    def produce_once_synced():  # what the replica's sync gate does: generate only at the policy
        deadline = time.monotonic() + 30
        while engine.version < learner.queue.learner_version() and time.monotonic() < deadline:
            time.sleep(0.05)
        for g in range(2):
            produce_group(engine, learner.queue, job_id, group_size=4, seed=100 + g)
        produced.set()

    threading.Thread(target=produce_once_synced, daemon=True).start()
    try:
        t0 = time.monotonic()
        items = learner.next_batch()  # nothing queued: the learner re-syncs replica-b while it waits
        waited = time.monotonic() - t0
        assert produced.wait(10) and learner.catch_up.pushes >= 1 and waited < 30
        assert engine.version == learner.version == 2
        mine = learner.base.state_dict()
        theirs = engine.model.state_dict()
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[n], theirs[n]) for n in mine), "base + pushed blocks != the policy"
        trained = {n for n in mine if not torch.equal(mine[n], base[n])}
        assert trained and all(".layers.1." in n or n == "model.norm.weight" for n in trained)
        stats = learner.train_step(items)
        assert stats["behaviour_version_min"] == stats["behaviour_version_max"] == 2.0
        assert stats["catchup_ok"] >= 1
    finally:
        receiver.stop()
        learner.sender.close()  # its persistent groups


def test_all_stale_fails_with_the_reason_after_a_warning_and_keeps_its_clock(
    redis_url, redis_client, job_id, tiny_model_path, tmp_path
):
    cfg = config(job_id, redis_url, tiny_model_path, tmp_path, stall_timeout_s=3.0, push_weights=False)
    learner = Learner(cfg)
    learner.version = 5  # the learner is at v5; every trajectory below is made by v0: beyond the bound 1
    engine = make_engine("transformers", tiny_model_path, threads=1)
    stop = threading.Event()

    def keep_producing():
        seed = 0
        while not stop.is_set():
            produce_group(engine, learner.queue, job_id, group_size=4, seed=seed)
            seed += 1
            time.sleep(0.2)

    threading.Thread(target=keep_producing, daemon=True).start()
    try:
        t0 = time.monotonic()
        with pytest.raises(LearnerError, match="arrived stale") as err:
            learner.next_batch()
        assert 3.0 <= time.monotonic() - t0 < 3.0 + 10
        assert "max_staleness=1" in str(err.value) and "v5" in str(err.value)
        logs = [e for _, e in read_events(redis_client, job_id) if isinstance(e, LogEvent)]
        assert [e.level for e in logs] == ["warning", "error"] and {e.source for e in logs} == {"learner"}
        assert "the job fails at 3 s" in logs[0].message and str(err.value) in logs[1].message
        assert learner.queue.stats()["stale"] >= 4 and learner.queue.stats()["stalled_s"] >= 3
        # Ray Train restarts the worker: the clock goes on, it does not wait another full timeout
        again = Learner(cfg)
        again.version = 5
        t0 = time.monotonic()
        with pytest.raises(LearnerError):
            again.next_batch()
        assert time.monotonic() - t0 < 2.0
    finally:
        stop.set()


def test_nothing_at_all_fails_and_fresh_data_resets_the_clock(
    redis_url, redis_client, job_id, tiny_model_path, tmp_path
):
    cfg = config(job_id, redis_url, tiny_model_path, tmp_path, stall_timeout_s=2.0, push_weights=False)
    learner = Learner(cfg)
    with pytest.raises(LearnerError, match="none arrived; are the rollout replicas running"):
        learner.next_batch()
    assert learner.queue.stats()["stalled_s"] >= 2
    engine = make_engine("transformers", tiny_model_path, threads=1)
    for g in range(2):
        produce_group(engine, learner.queue, job_id, group_size=4, seed=g)
    assert len(Learner(cfg).next_batch()) == 8  # fresh data: trained, and the clock is cleared
    assert learner.queue.stats()["stalled_s"] == 0


def test_a_step_longer_than_claim_idle_never_trains_an_entry_twice(
    redis_url, redis_client, job_id, tiny_model_path, tmp_path
):
    """A step whose push or checkpoint outlasts `claim_idle_ms` (a replica timing out): the keep-alive
    thread touches the learner's entries meanwhile, and entries it already holds are never delivered to
    it again (nor dropped as stale) when it reclaims idle ones."""
    queue_cfg = QueueConfig(max_len=256, max_staleness=1, claim_idle_ms=400)
    cfg = config(job_id, redis_url, tiny_model_path, tmp_path, push_weights=False, queue=queue_cfg)
    learner = Learner(cfg)
    engine = make_engine("transformers", tiny_model_path, threads=1)
    for g in range(6):
        produce_group(engine, learner.queue, job_id, group_size=4, seed=g)
    first = learner.next_batch()
    with learner._keepalive():
        learner.train_step(first)
        time.sleep(1.5)  # the "push" takes almost 4 x claim_idle_ms
    idle = [
        p["time_since_delivered"]
        for p in redis_client.xpending_range(learner.queue.stream, "learners", "-", "+", 100)
    ]
    assert idle and max(idle) < 1000  # touched during the long step
    time.sleep(0.6)  # now really idle past claim_idle_ms: the next get reclaims them (ours)
    second = learner.next_batch()
    trained = [i.trajectory.id for i in first + second]
    assert len(trained) == len(set(trained)) == 16, "an entry was delivered (trained) twice"
    learner.train_step(second)
    learner.commit()
    s = learner.queue.stats()
    assert (s["acked"], s["stale"]) == (16, 0)  # each entry acked once
