"""The trajectory queue against a real redis-server (no fakes): delivery, back-pressure, crashes, AOF."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from services.config import redis_client
from services.queue import QueueConfig, QueueFull, TrajectoryQueue
from services.redis_server import RedisServer
from tests.helpers import make_trajectory


def drain(q: TrajectoryQueue, consumer: str, expect: int, timeout_s: float = 20.0) -> list[str]:
    """Consume like a learner: get a batch, 'train' on it (record ids), ack; until `expect` trained."""
    trained: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(trained) < expect and time.monotonic() < deadline:
        batch = q.get(consumer, count=4, block_ms=200)
        trained += [t.id for t in batch.trajectories]
        assert q.ack(batch) == len(batch)
    return trained


def test_round_trip_in_order_and_nothing_left(redis_client, job_id):
    q = TrajectoryQueue(redis_client, job_id)
    sent = [make_trajectory(job_id, episode_id=f"e{i}") for i in range(10)]
    ids = q.put_many(sent)
    assert all(ids) and ids == sorted(ids)
    batch = q.get("learner-0", count=10)
    assert [t.id for t in batch.trajectories] == [t.id for t in sent]
    assert batch.trajectories[3] == sent[3]
    assert q.stats()["pending"] == 10
    assert q.ack(batch) == 10
    s = q.stats()
    assert (s["depth"], s["pending"], s["put"], s["acked"]) == (0, 0, 10, 10)


def test_put_is_idempotent_by_trajectory_id(redis_client, job_id):
    q = TrajectoryQueue(redis_client, job_id)
    t = make_trajectory(job_id)
    assert q.put(t) is not None
    assert q.put(t) is None  # a producer retrying after a lost reply
    assert q.stats()["depth"] == 1


def test_wrong_job_is_refused(redis_client, job_id):
    q = TrajectoryQueue(redis_client, job_id)
    with pytest.raises(ValueError, match="belongs to job"):
        q.put(make_trajectory("another-job"))


def test_back_pressure_waits_then_admits_when_learner_acks(redis_client, job_id):
    q = TrajectoryQueue(redis_client, job_id, QueueConfig(max_len=3, put_timeout_s=10))
    q.put_many([make_trajectory(job_id) for _ in range(3)])

    def learner():
        time.sleep(0.5)
        q.ack(q.get("l", count=2))

    th = threading.Thread(target=learner)
    th.start()
    t0 = time.monotonic()
    late = [make_trajectory(job_id) for _ in range(2)]
    assert all(q.put_many(late))
    waited = time.monotonic() - t0
    th.join()
    assert 0.4 < waited < 5, waited
    assert q.stats()["depth"] == 3


def test_back_pressure_times_out_with_a_clear_error_and_drops_nothing(redis_client, job_id):
    q = TrajectoryQueue(redis_client, job_id, QueueConfig(max_len=2, put_timeout_s=0.3))
    first = [make_trajectory(job_id) for _ in range(3)]
    with pytest.raises(QueueFull, match="1 of 3 not admitted"):
        q.put_many(first)
    assert q.stats()["depth"] == 2
    got = q.get("l", 10).trajectories
    assert [t.id for t in got] == [t.id for t in first[:2]]


def test_crashed_consumer_mid_batch_loses_nothing_and_trains_nothing_twice(redis_url, redis_client, job_id):
    cfg = QueueConfig(claim_idle_ms=500)
    q = TrajectoryQueue(redis_client, job_id, cfg)
    sent = {
        t.id for t in [make_trajectory(job_id, episode_id=f"e{i}") for i in range(20)] if q.put(t) or True
    }
    # A real learner process takes a batch and dies (SIGKILL) before its optimizer step / ack.
    doomed = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import time
        from services.config import redis_client
        from services.queue import TrajectoryQueue, QueueConfig
        q = TrajectoryQueue(redis_client({redis_url!r}), {job_id!r}, QueueConfig(claim_idle_ms=500))
        b = q.get("doomed", count=8)
        print("took", len(b), flush=True)
        time.sleep(600)
    """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert doomed.stdout.readline().strip() == "took 8"
    finally:
        doomed.kill()
        doomed.wait()
    assert q.stats()["pending"] == 8
    trained = drain(q, "survivor", expect=20)
    assert len(trained) == len(set(trained)) == 20, "a trajectory was trained twice"
    assert set(trained) == sent, "a trajectory was lost"
    s = q.stats()
    assert (s["depth"], s["pending"], s["acked"]) == (0, 0, 20)


def test_slow_consumer_cannot_ack_what_was_reclaimed(redis_client, job_id):
    q = TrajectoryQueue(redis_client, job_id, QueueConfig(claim_idle_ms=200))
    q.put_many([make_trajectory(job_id) for _ in range(4)])
    slow = q.get("slow", 4)
    time.sleep(0.3)
    fast = q.get("fast", 4)
    assert fast.reclaimed == 4
    assert q.touch(slow) == slow.ids  # the slow one learns it lost them before its optimizer step
    assert q.ack(slow) == 0
    assert q.ack(fast) == 4


def test_touch_keeps_a_long_step_alive(redis_client, job_id):
    q = TrajectoryQueue(redis_client, job_id, QueueConfig(claim_idle_ms=300))
    q.put_many([make_trajectory(job_id) for _ in range(2)])
    b = q.get("busy", 2)
    for _ in range(3):
        time.sleep(0.15)
        assert q.touch(b) == []
    assert len(q.get("other", 2, block_ms=50)) == 0
    assert q.ack(b) == 2


def test_poison_entry_goes_to_dead_letters_after_max_deliveries(redis_client, job_id):
    q = TrajectoryQueue(redis_client, job_id, QueueConfig(claim_idle_ms=50, max_deliveries=2))
    q.put(make_trajectory(job_id))
    for attempt in range(2):  # two learners crash on it
        assert len(q.get(f"crashy-{attempt}", 1, block_ms=50)) == 1
        time.sleep(0.1)
    b = q.get("third", 1, block_ms=50)
    assert len(b) == 0 and b.dead == 1
    s = q.stats()
    assert (s["depth"], s["dead_letters"], s["dead"]) == (0, 1, 1)
    assert "delivered 3 times" in q.dead_letters()[0]["reason"]
    assert q.requeue_dead() == 1  # after the fix, an operator gives it another chance
    assert len(q.get("fixed", 1)) == 1


def test_undecodable_entry_is_dead_lettered_not_raised(redis_client, job_id):
    q = TrajectoryQueue(redis_client, job_id)
    redis_client.xadd(q.stream, {"t": "x", "d": b"\x00garbage"})
    q.put(make_trajectory(job_id))
    b = q.get("l", 5)
    assert len(b) == 1 and b.dead == 1
    assert "undecodable" in q.dead_letters()[0]["reason"]


def test_unknown_schema_version_is_dead_lettered_with_the_reason(redis_client, job_id):
    import msgpack

    from services.codec import encode

    q = TrajectoryQueue(redis_client, job_id)
    future = msgpack.unpackb(encode(make_trajectory(job_id)))
    future["_v"] = 99
    redis_client.xadd(q.stream, {"t": "future", "d": msgpack.packb(future, use_bin_type=True)})
    b = q.get("l", 5, block_ms=50)
    assert len(b) == 0 and b.dead == 1
    assert "schema version 99" in q.dead_letters()[0]["reason"]


def test_queue_settings_follow_the_job_spec(redis_client, job_id):
    from services.jobspec import JobSpec

    cfg = QueueConfig.for_job(JobSpec.from_text("asynchrony: {max_staleness: 1, stale_policy: count}"))
    assert (cfg.max_staleness, cfg.stale_policy) == (1, "count")


def test_metrics_expose_depth_and_counters(redis_client, job_id):
    from services import metrics

    q = TrajectoryQueue(redis_client, job_id)
    q.put_many([make_trajectory(job_id) for _ in range(3)])
    q.ack(q.get("l", 1))
    q.stats()
    text = metrics.render().decode()
    assert f'payoff_queue_depth{{job="{job_id}"}} 2.0' in text
    assert f'payoff_queue_acked_total{{job="{job_id}"}} 1.0' in text
    assert f'payoff_queue_put_total{{job="{job_id}"}} 3.0' in text


@pytest.mark.parametrize("policy", ["drop", "count"])
def test_staleness_bound(redis_client, job_id, policy):
    q = TrajectoryQueue(redis_client, job_id, QueueConfig(max_staleness=2, stale_policy=policy))
    q.set_learner_version(10)
    fresh, edge, stale = (make_trajectory(job_id, version=v) for v in (10, 8, 7))
    q.put_many([fresh, edge, stale])
    b = q.get("l", 3)
    assert b.stale == 1
    kept = {t.id for t in b.trajectories}
    assert {fresh.id, edge.id} <= kept
    assert (stale.id in kept) == (policy == "count")
    q.ack(b)
    s = q.stats()
    assert s["depth"] == 0 and s["stale"] == (1 if policy == "drop" else 0)
    if policy == "drop":
        ((_, fields),) = redis_client.xrange(q.stale_stream)
        assert fields[b"t"].decode() == stale.id and b"stale by 3 versions" in fields[b"reason"]


def test_concurrent_producers_and_consumers_exactly_once(redis_url, job_id):
    q_for = lambda: TrajectoryQueue(redis_client(redis_url), job_id, QueueConfig(max_len=16))  # noqa: E731
    per_producer, producers = 60, 3
    sent: list[str] = []
    trained: list[str] = []
    lock = threading.Lock()

    def produce(p: int):
        q = q_for()
        for i in range(per_producer):
            t = make_trajectory(job_id, episode_id=f"p{p}-{i}")
            q.put(t)
            with lock:
                sent.append(t.id)

    def consume(c: int):
        q, deadline = q_for(), time.monotonic() + 20
        while time.monotonic() < deadline:
            batch = q.get(f"c{c}", count=4, block_ms=100)
            with lock:
                trained.extend(t.id for t in batch.trajectories)
            q.ack(batch)
            if not batch and producers_done.is_set() and q.stats()["depth"] == 0:
                return

    producers_done = threading.Event()
    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    threads += [threading.Thread(target=consume, args=(c,)) for c in range(2)]
    for th in threads:
        th.start()
    for th in threads[:producers]:
        th.join(30)
    producers_done.set()
    for th in threads[producers:]:
        th.join(30)
    assert len(trained) == len(set(trained)) == len(sent) == per_producer * producers
    assert set(trained) == set(sent)


@pytest.mark.parametrize("crash", [False, True], ids=["shutdown", "sigkill"])
def test_redis_restart_keeps_the_stream_via_aof(tmp_path, job_id, crash):
    # appendfsync=always so even SIGKILL loses nothing; 'shutdown' flushes the AOF anyway
    server = RedisServer(tmp_path / "redis", appendfsync="always").start()
    try:
        client = redis_client(server.url)
        q = TrajectoryQueue(client, job_id)
        sent = [make_trajectory(job_id, episode_id=f"e{i}") for i in range(6)]
        q.put_many(sent)
        taken = q.get("before", 2)  # delivered, not acked: must still be pending after the restart
        q.ack(q.get("before", 1))
        server.restart(crash=crash)
        assert (tmp_path / "redis" / "payoff.aof").exists()
        q2 = TrajectoryQueue(redis_client(server.url), job_id, QueueConfig(claim_idle_ms=1))
        s = q2.stats()
        assert (s["depth"], s["pending"], s["put"], s["acked"]) == (5, 2, 6, 1)
        time.sleep(0.01)
        rest = drain(q2, "after", expect=5)
        assert sorted(rest) == sorted({t.id for t in sent} - {t.id for t in sent[2:3]})
        assert {t.id for t in taken.trajectories} <= set(rest)
    finally:
        server.stop()


def test_client_survives_a_redis_restart_between_calls(tmp_path, job_id):
    server = RedisServer(tmp_path / "redis", appendfsync="always").start()
    try:
        q = TrajectoryQueue(redis_client(server.url), job_id)
        q.put(make_trajectory(job_id))
        server.restart(crash=True)
        q.put(make_trajectory(job_id))  # same client object reconnects
        assert q.stats()["depth"] == 2
    finally:
        server.stop()


def test_dead_server_is_an_error_not_a_hang(tmp_path, job_id):
    server = RedisServer(tmp_path / "redis").start()
    q = TrajectoryQueue(redis_client(server.url, timeout_s=1), job_id)
    server.kill()
    t0 = time.monotonic()
    with pytest.raises(Exception) as err:
        q.put(make_trajectory(job_id))
    assert "onnect" in type(err.value).__name__ + str(err.value)
    assert time.monotonic() - t0 < 10
