"""Ray actors producing into and consuming from the real queue (shared Ray session, fractional CPUs)."""

from __future__ import annotations

import time

import pytest

from tests.helpers import make_trajectory


@pytest.fixture
def actors(ray_session, redis_url, job_id):
    ray = ray_session

    @ray.remote(num_cpus=0.25)
    def produce(url: str, job: str, n: int, tag: str) -> list[str]:
        from services.config import redis_client
        from services.queue import TrajectoryQueue

        q = TrajectoryQueue(redis_client(url), job)
        sent = [make_trajectory(job, episode_id=f"{tag}-{i}") for i in range(n)]
        q.put_many(sent)
        return [t.id for t in sent]

    @ray.remote(num_cpus=0.25)
    class Learner:
        def __init__(self, url: str, job: str, name: str):
            from services.config import redis_client
            from services.queue import QueueConfig, TrajectoryQueue

            self.q = TrajectoryQueue(redis_client(url), job, QueueConfig(claim_idle_ms=300))
            self.name, self.trained = name, []

        def take(self, n: int) -> int:
            return len(self.q.get(self.name, n))  # and never ack: this one will be killed

        def run(self, expect: int, timeout_s: float = 30) -> list[str]:
            deadline = time.monotonic() + timeout_s
            while len(self.trained) < expect and time.monotonic() < deadline:
                b = self.q.get(self.name, 8, block_ms=200)
                self.trained += [t.id for t in b.trajectories]
                self.q.ack(b)
            return self.trained

    return ray, produce, Learner, redis_url, job_id


def test_ray_producers_to_learner_actor_exactly_once(actors):
    ray, produce, Learner, url, job = actors
    sent = sum(ray.get([produce.remote(url, job, 15, f"p{i}") for i in range(3)]), [])
    trained = ray.get(Learner.remote(url, job, "learner-0").run.remote(len(sent)))
    assert len(trained) == len(set(trained)) == 45 and set(trained) == set(sent)


def test_killed_learner_actor_batch_is_redelivered(actors):
    ray, produce, Learner, url, job = actors
    sent = ray.get(produce.remote(url, job, 12, "p"))
    doomed = Learner.remote(url, job, "doomed")
    assert ray.get(doomed.take.remote(5)) == 5
    ray.kill(doomed)
    trained = ray.get(Learner.remote(url, job, "heir").run.remote(12))
    assert sorted(trained) == sorted(sent)
