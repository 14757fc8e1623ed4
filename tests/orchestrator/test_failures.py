"""Failed rollout requests: deterministic rejections (4xx) fail the driver with the replica's error after N
in a row; transient failures are retried, counted and reported at most every N seconds. The loop runs
against the in-memory client and queue of test_schedules.py; events go to a recording stand-in."""

from __future__ import annotations

import threading

import pytest

from orchestrator import loop
from orchestrator.failures import CallFailures, RolloutRejected, deterministic
from services.rollout_api import RolloutCallError
from tests.orchestrator.test_schedules import Done, FakeClient, FakeQueue, spec

ENV_ERROR = "cannot build env 'blocksworld': Expecting value: line 1 column 1 (char 0)"


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def events(monkeypatch):
    got = []
    import services.jobs as jobs_mod  # failures.py reports through services.jobs.report

    monkeypatch.setattr(jobs_mod, "publish_event", lambda client, ev: got.append(ev))
    return got


def rejected(status: int = 422) -> RolloutCallError:
    return RolloutCallError(f"tppo_step on 'rollout-x' failed: HTTPException: {ENV_ERROR}", status, ENV_ERROR)


def test_which_failures_are_deterministic():
    assert deterministic(rejected(422)) and deterministic(rejected(400)) and deterministic(rejected(409))
    for status in (None, 408, 429, 500, 503, 504):
        assert not deterministic(RolloutCallError("x", status))


def test_rejections_in_a_row_fail_with_the_replicas_error(events):
    f = CallFailures("job", client=object(), reject_after=3, report_every_s=30, clock=Clock())
    f.failed(rejected())
    f.ok()  # a success in between: the count starts again
    f.failed(rejected())
    f.failed(RolloutCallError("replica restarting"))  # transient: neither counts nor resets
    f.failed(rejected())
    with pytest.raises(RolloutRejected) as err:
        f.failed(rejected())
    assert str(err.value).startswith(ENV_ERROR) and "HTTP 422 to 3 requests in a row" in str(err.value)
    assert events[-1].level == "error" and events[-1].source == "orchestrator"
    assert ENV_ERROR in events[-1].message and events[-1].job_id == "job"


def test_transient_failures_are_reported_at_most_every_interval(events):
    clock = Clock()
    f = CallFailures("job", client=object(), reject_after=3, report_every_s=10, clock=clock)
    for i in range(25):  # one failure a second for 25 s, all transient
        clock.t = float(i)
        f.failed(RolloutCallError("tppo_step failed: ActorDiedError", 503 if i % 2 else None))
    assert [e.level for e in events] == ["warning"] * 3  # at 0, 10 and 20 s
    assert "[10 failed since the last report]" in events[1].message
    assert f.unreported == 4  # 21..24, reported next time


@pytest.fixture
def published(monkeypatch):
    got = []
    monkeypatch.setattr(
        loop.RolloutStats, "publish", lambda self, r, j, force=False: got.append(self.snapshot())
    )
    monkeypatch.setattr(loop, "RETRY_PAUSE_S", 0.01)
    return got


def test_loop_fails_the_job_at_start_when_the_env_cannot_be_built(events, published):
    client, stop = FakeClient(), threading.Event()
    client.tppo_step = lambda req: client.requests.append(req) or Done(err=rejected())
    f = CallFailures("job", client=object(), reject_after=3, report_every_s=30)
    timer = threading.Timer(30, stop.set)  # a safety net only: the loop must end by itself
    timer.start()
    try:
        with pytest.raises(RolloutRejected, match="cannot build env 'blocksworld'"):
            loop.run("job", spec(), client, FakeQueue(), stop, failures=f)
    finally:
        timer.cancel()
    assert not stop.is_set() and len(client.requests) >= 3
    assert published[-1]["rejected_calls"] == 3 and published[-1]["retried_calls"] == 0
    assert [e.level for e in events] == ["warning", "error"]  # the first rejection, then the failure


def test_loop_keeps_retrying_transient_failures(events, published):
    client, stop = FakeClient(), threading.Event()
    calls = []

    def flaky(req):
        calls.append(req)
        if len(calls) <= 6:  # the replica restarts, then catches up with the learner (503), then works
            return Done(err=RolloutCallError("replica catching up", 503 if len(calls) > 3 else None))
        return FakeClient.tppo_step(client, req)

    client.tppo_step = flaky
    f = CallFailures("job", client=object(), reject_after=2, report_every_s=30)
    threading.Timer(1.0, stop.set).start()
    snap = loop.run("job", spec(), client, FakeQueue(), stop, failures=f).snapshot()
    assert snap["retried_calls"] == 6 and snap["rejected_calls"] == 0 and snap["trajectories"] > 0
    assert [e.level for e in events] == ["warning"]  # reported once in the interval
