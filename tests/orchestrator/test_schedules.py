"""The orchestrator's pure logic: schedule choice, task/seed determinism, the sync barrier, the staleness
gate, statistics, and the loop against an in-memory rollout client and queue (no Ray, no Redis)."""

from __future__ import annotations

import threading
import time

import pytest

from orchestrator import loop
from orchestrator.episodes import AsyncEpisodes
from orchestrator.schedule import make_schedule
from orchestrator.staleness import StalenessGate
from orchestrator.stats import RolloutStats
from orchestrator.sync import SyncBatches
from orchestrator.tasks import TaskSampler
from orchestrator.tppo import TppoWindows
from services.jobspec import JobSpec
from services.rollout_api import EpisodeResult, RolloutCallError, TrajectorySummary, WindowStepResult


def spec(**over) -> JobSpec:
    base = {
        "name": "t",
        "model": {"path": "tiny-qwen3"},
        "algorithm": "tppo",
        "tasks": [{"env": "sokoban", "max_turns": 1, "weight": 1.0}, {"env": "tetris", "max_turns": 1}],
        "rollout": {"replicas": 2, "group_size": 2, "max_response_tokens": 16},
        "asynchrony": {"window_tokens": 8},
        "learner": {"steps": 3, "batch_size": 4, "mini_batch_size": 4},
    }
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) else v
    return JobSpec.model_validate(base)


class FakeQueue:
    def __init__(self):
        self.version, self.waiting, self.r = 0, 0, None

    def learner_version(self) -> int:
        return self.version

    def undelivered(self) -> int:
        return self.waiting


class Done:
    def __init__(self, res=None, err=None):
        self.res, self.err = res, err

    def result(self, timeout_s: float):
        if self.err:
            raise self.err
        return self.res


def episode_result(n=2, reward=1.0, busy_s=0.5) -> EpisodeResult:
    trajs = [
        TrajectorySummary(id=f"t{i}", role="policy", tokens=10, generated=4, reward=reward, versions=[0])
        for i in range(n)
    ]
    return EpisodeResult(episodes=[], trajectories=trajs, busy_s=busy_s, replica="r0")


class FakeClient:
    def __init__(self, fail_every: int = 0):
        self.requests, self.fail_every = [], fail_every

    def ready(self) -> bool:
        return True

    def _done(self, res):
        self.requests.append(res)
        if self.fail_every and len(self.requests) % self.fail_every == 0:
            return Done(err=RolloutCallError("replica restarting"))
        return Done(res)

    def episodes(self, req):
        return self._done(episode_result(req.group_size))

    def tppo_step(self, req):
        return self._done(
            WindowStepResult(
                segments=req.batch_size,
                finished=1,
                tokens=8 * req.batch_size,
                rewards=[0.5],
                enqueued=req.batch_size,
                busy_s=0.2,
                replica="r1",
                version=0,
            )
        )


def test_schedule_choice():
    q = FakeQueue()
    assert isinstance(make_schedule(spec(), q), TppoWindows)
    assert isinstance(make_schedule(spec(asynchrony={"mode": "sync"}), q), SyncBatches)
    multi = spec(tasks=[{"env": "sokoban", "max_turns": 3}])
    assert isinstance(make_schedule(multi, q), AsyncEpisodes)
    assert isinstance(make_schedule(spec(algorithm="grpo"), q), AsyncEpisodes)


def test_tasks_and_seeds_depend_only_on_the_spec():
    a, b = TaskSampler(spec(seed=7)), TaskSampler(spec(seed=7))
    draws = [a.next() for _ in range(20)]
    assert draws == [b.next() for _ in range(20)]
    assert [c for _, c in draws] == list(range(20))
    assert {t.env for t, _ in draws} == {"sokoban", "tetris"}
    seeds = []
    for _ in range(2):
        s, client = AsyncEpisodes(spec(seed=7, algorithm="grpo")), FakeClient()
        client.episodes = lambda req: seeds.append((req.env, req.seed)) or Done()
        for _ in range(5):
            s.issue(client)
    assert seeds[:5] == seeds[5:] and [x for _, x in seeds[:5]] == [7 * 1_000_003 + i for i in range(5)]


def test_window_seeds_never_overlap_between_calls():
    s, client, reqs = TppoWindows(spec(seed=3)), FakeClient(), []
    client.tppo_step = lambda req: reqs.append(req) or Done()
    for _ in range(3):
        s.issue(client)
    firsts = [r.first_seed for r in reqs]
    assert firsts == sorted(set(firsts)) and firsts[1] - firsts[0] >= reqs[0].batch_size
    assert all(r.window == 8 and r.batch_size == 4 for r in reqs)  # groups_per_step 2 x group_size 2


def test_sync_barrier_waits_for_the_learner():
    q, stop = FakeQueue(), threading.Event()
    s = SyncBatches(spec(asynchrony={"mode": "sync"}), q, poll_s=0.01)
    assert s.groups == 2 and s.capacity(0) == 2  # batch 4 / group 2, two replicas
    s.issue(FakeClient()), s.issue(FakeClient())
    assert s.capacity(0) == 0
    s.wait_turn(1, stop)  # a result still in flight: no waiting
    assert s.produced == 2
    threading.Timer(0.1, lambda: setattr(q, "version", 1)).start()
    t0 = time.monotonic()
    s.wait_turn(0, stop)
    assert time.monotonic() - t0 >= 0.09 and s.produced == 0 and s.capacity(0) == 2
    s.issue(FakeClient())
    assert s.base_version == 1


def test_sync_barrier_ends_on_stop():
    q, stop = FakeQueue(), threading.Event()
    s = SyncBatches(spec(asynchrony={"mode": "sync"}), q, poll_s=0.01)
    s.issue(FakeClient()), s.issue(FakeClient())
    threading.Timer(0.05, stop.set).start()
    s.wait_turn(0, stop)  # returns although the learner never moved


def test_staleness_gate():
    q = FakeQueue()
    gate = StalenessGate(q, spec(asynchrony={"max_staleness": 2}))
    assert gate.ahead == 8 and gate.open()
    q.waiting = 8
    assert not gate.open()
    assert StalenessGate(q, spec(asynchrony={"max_staleness": 0})).ahead == 4


def test_stats_count_both_result_kinds():
    st = RolloutStats(replicas=2)
    st.add(episode_result(3, reward=1.0))
    st.add(
        WindowStepResult(
            segments=4, finished=1, tokens=32, rewards=[0.0], enqueued=4, busy_s=1.0, replica="r1", version=2
        )
    )
    st.failed()
    snap = st.snapshot()
    assert (snap["trajectories"], snap["finished"], snap["tokens"], snap["failed_calls"]) == (7, 4, 44, 1)
    assert snap["busy_s"] == 1.5 and snap["reward_recent"] == pytest.approx(0.75)


def test_steady_idle_counts_from_the_learners_first_step_only(monkeypatch):
    import orchestrator.stats as stats_mod

    now = [100.0]
    monkeypatch.setattr(stats_mod.time, "monotonic", lambda: now[0])
    st = RolloutStats(replicas=1)
    now[0] = 160.0  # a minute of deployment and learner start-up, engine idle
    st.add(episode_result(1, reward=0.0, busy_s=1.0))
    assert "steady_idle_ratio" not in st.snapshot()
    st.steady()
    now[0] = 162.0
    st.add(episode_result(1, reward=0.0, busy_s=3.0))  # straddles the start: 2 s of it count
    now[0] = 170.0
    st.add(episode_result(1, reward=0.0, busy_s=7.0))
    snap = st.snapshot()
    assert snap["steady_wall_s"] == 10.0 and snap["steady_busy_s"] == 9.0
    assert snap["steady_idle_ratio"] == pytest.approx(0.1)
    assert snap["idle_ratio"] == pytest.approx(1 - 11.0 / 70.0, abs=1e-4)  # whole life
    st.end_steady()  # the learner's last step: the window closes
    now[0] = 175.0
    st.add(episode_result(1, reward=0.0, busy_s=5.0))  # after the end: outside the window
    snap = st.snapshot()
    assert snap["steady_wall_s"] == 10.0 and snap["steady_busy_s"] == 9.0 and snap["steady_calls"] == 2


def test_the_call_account_is_the_mean_per_steady_call_by_phase():
    st = RolloutStats(replicas=1)
    res = lambda gen, put: WindowStepResult(  # noqa: E731
        segments=1,
        finished=0,
        tokens=1,
        rewards=[],
        enqueued=1,
        busy_s=gen,
        replica="r",
        version=0,
        account={"generate": gen, "put": put},
    )
    st.add(res(9.0, 9.0))  # before the learner's first step: not in the account
    assert "call_generate_s" not in st.snapshot()
    st.steady()
    st.add(res(0.2, 0.01))
    st.add(res(0.4, 0.03))
    snap = st.snapshot()
    assert snap["steady_calls"] == 2
    assert snap["call_generate_s"] == pytest.approx(0.3) and snap["call_put_s"] == pytest.approx(0.02)


def test_tppo_windows_keep_two_calls_in_flight_per_replica():
    from orchestrator.tppo import PIPELINE

    s = TppoWindows(spec())  # two replicas
    assert PIPELINE == 2 and s.capacity(0) == 4 and s.capacity(3) == 1 and s.capacity(4) == 0
    assert AsyncEpisodes(spec(algorithm="grpo")).capacity(0) == 2  # whole episodes: one per replica


def run_loop(s: JobSpec, client, queue, seconds: float) -> RolloutStats:
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    import orchestrator.stats as stats_mod

    published = []
    orig = stats_mod.publish_rollout_stats
    stats_mod.publish_rollout_stats = lambda c, j, d: published.append(d)
    try:
        out = loop.run("job", s, client, queue, stop)
    finally:
        stats_mod.publish_rollout_stats = orig
    assert published and published[-1]["trajectories"] == out.trajectories
    return out


def test_loop_counts_results_and_survives_failed_calls():
    client = FakeClient(fail_every=3)
    st = run_loop(spec(algorithm="grpo"), client, FakeQueue(), 1.5)
    collected = st.trajectories // 2  # each good result holds one group of 2
    assert st.failures >= 1 and collected >= 2
    in_flight_at_stop = len(client.requests) - st.failures - collected
    assert 0 <= in_flight_at_stop <= 2  # at most one per replica (episodes)


def test_loop_respects_the_staleness_gate():
    q = FakeQueue()
    q.waiting = 10**6  # the learner is far behind: nothing may be issued
    client = FakeClient()
    st = run_loop(spec(), client, q, 0.2)
    assert client.requests == [] and st.trajectories == 0
