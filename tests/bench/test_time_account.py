"""bench.async_sync.time_account: the mean per-step time account by phase, from real StepEvents."""

from __future__ import annotations

import pytest

from bench.async_sync import time_account
from learner.metrics import phases
from services.jobs import StepEvent


def step(n: int, **metrics: float) -> StepEvent:
    return StepEvent(job_id="j", step=n, policy_version=n, metrics=metrics)


def test_phases_of_a_step_take_laps_push_checkpoint_wait_and_report():
    got = phases(
        {
            "time_forward_s": 0.5,
            "time_push_transfer_s": 0.2,
            "checkpoint_s": 1.0,
            "wait_s": 0.1,
            "report_s": 0.01,
            "step_s": 0.9,
            "policy_loss": 0.3,
        }
    )
    assert got == {"forward": 0.5, "push_transfer": 0.2, "checkpoint": 1.0, "wait": 0.1, "report": 0.01}


def test_time_account_is_the_mean_per_step():
    acc = time_account(
        [step(1, time_forward_s=1.0, wait_s=0.5), step(2, time_forward_s=3.0, checkpoint_s=2.0)]
    )
    assert acc == pytest.approx({"checkpoint": 1.0, "forward": 2.0, "wait": 0.25})
    assert time_account([]) == {}
