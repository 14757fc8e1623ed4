import pytest
from pydantic import ValidationError

from services.schemas import NOT_GENERATED, Trajectory
from tests.helpers import make_trajectory


def test_staleness_uses_the_oldest_generated_token():
    t = make_trajectory("j", version=5)
    t.versions[-1] = 7  # a later window produced by a newer policy
    assert t.oldest_version() == 5 and t.staleness(9) == 4 and t.staleness(3) == 0
    assert t.num_generated == 8 and t.finished


def test_prompt_only_trajectory_has_no_staleness():
    t = Trajectory(
        job_id="j",
        episode_id="e",
        group_id="g",
        token_ids=[1, 2],
        logprobs=[0, 0],
        versions=[NOT_GENERATED] * 2,
        loss_mask=[0, 0],
        rewards=[0, 0],
        finish_reason="abort",
    )
    assert t.oldest_version() is None and t.staleness(100) == 0 and not t.finished


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(token_ids=[]), "no tokens"),
        (dict(loss_mask=[2] * 12), "0 or 1"),
        (dict(logprobs=[0.5] * 12), "<= 0"),
        (dict(logprobs=[float("nan")] * 12), "finite"),
        (dict(rewards=[float("inf")] * 12), "finite"),
        (dict(prompt_len=99), "prompt_len 99 exceeds"),
        (dict(role_ids=[0] * 11 + [3]), "role_ids must index"),
        (dict(versions=[-2] * 12), "versions must be"),
        (dict(finish_reason="timeout"), "Input should be"),
        (dict(surprise=1), "Extra inputs"),
    ],
)
def test_invalid_trajectories_fail_with_reason(change, words):
    data = make_trajectory("j").model_dump()
    data.update(change)
    with pytest.raises(ValidationError, match=words):
        Trajectory.model_validate(data)
