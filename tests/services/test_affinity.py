"""CPU pools from the JobSpec: threads per process and disjoint cores for rollout and learner."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services import affinity


def test_threads_follow_cpus():
    assert affinity.threads_for(0.25) == 1
    assert affinity.threads_for(1.0) == 1
    assert affinity.threads_for(2.9) == 2


def test_pools_are_disjoint_rollout_bottom_learner_top():
    host = 8
    r = [affinity.plan("rollout", 2, s, 4, 2, host_cpus=host).cores for s in range(2)]
    ln = [affinity.plan("learner", 1, s, 4, 2, host_cpus=host).cores for s in range(2)]
    assert r == [(0, 1), (2, 3)]
    assert ln == [(7,), (6,)]
    assert not set(sum(r, ())) & set(sum(ln, ()))


def test_one_core_each_on_two_cores():
    assert affinity.plan("rollout", 1, 0, 1, 1, host_cpus=2).cores == (0,)
    assert affinity.plan("learner", 0.9, 0, 1, 1, host_cpus=2).cores == (1,)


def test_too_few_cores_pins_nothing_but_bounds_threads():
    p = affinity.plan("rollout", 2, 0, 4, 2, host_cpus=4)
    assert p.cores is None and p.threads == 2 and "needs 6 cores" in p.reason


def test_slot_wraps_within_the_pool():
    # a restarted replica takes the next slot from the job's counter; it stays inside the rollout pool
    assert affinity.plan("rollout", 1, 3, 2, 1, host_cpus=4).cores == (1,)


def test_opt_out(monkeypatch):
    monkeypatch.setenv("PAYOFF_CPU_AFFINITY", "0")
    assert affinity.plan("rollout", 1, 0, 1, 1, host_cpus=2).cores is None


def test_bad_role():
    with pytest.raises(ValueError, match="role"):
        affinity.plan("judge", 1, 0, 1, 1)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_apply_pins_every_thread_of_the_process():
    code = (
        "import threading, os, time\n"
        "from services import affinity\n"
        "t = threading.Thread(target=time.sleep, args=(2,)); t.start()\n"
        "last = sorted(os.sched_getaffinity(0))[-1]\n"
        "affinity.apply(affinity.CorePlan((last,), 1, 'test'))\n"
        "tids = os.listdir('/proc/self/task')\n"
        "assert all(os.sched_getaffinity(int(x)) == {last} for x in tids), tids\n"
        "print(affinity.current())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "'threads': 1" in out.stdout
