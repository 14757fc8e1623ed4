"""Rollout asks the judge deployment (rules backend on real Ray Serve) for GTAlign rewards through the
services/judge_api contract; a judge that is down scores 0 without failing the episode."""

from __future__ import annotations

import pytest

from games.registry import make_env
from rollout.judging import JudgeScorer
from services.judge_api import JudgeClient
from services.schemas import Episode, Turn
from tests.judge.conftest import WORKED_EXAMPLE


def _episode(text: str) -> Episode:
    env = make_env("gtalign")
    obs = env.reset(0)
    result = env.step(text)
    return Episode(
        job_id="j",
        env="gtalign",
        seed=0,
        group_id="g",
        data_source="math-hard",
        ground_truth="2",
        info={"observation": obs[env.roles[0]]},
        turns=[
            Turn(
                role=env.roles[0],
                content=text,
                info={k: v for k, v in result.info.items() if isinstance(v, (bool, int, float, str))},
            )
        ],
    )


@pytest.mark.slow
def test_gtalign_rewards_come_from_the_judge_deployment(serve_url):
    from ray import serve

    from judge.config import JudgeConfig
    from judge.serve import deploy

    deploy(
        JudgeConfig(backend="rules", job="rollout-test", serve={"num_cpus": 0.25}), app_name="judge-rollout"
    )
    try:
        good, bad = _episode(WORKED_EXAMPLE), _episode("no blocks at all")
        assert good.turns[0].info["needs_judge"] and not bad.turns[0].info["needs_judge"]
        rewards = JudgeScorer(JudgeClient(app_name="judge-rollout"))([good, bad])
        role = good.turns[0].role
        assert rewards[0][role] > 0 and rewards[1] == {}
        assert "judge_user" in good.info and "judge_error" not in good.info
    finally:
        serve.delete("judge-rollout")
    down = _episode(WORKED_EXAMPLE)
    assert JudgeScorer("no-such-judge", timeout_s=5)([down]) == [{}]
    assert "judge_error" in down.info
