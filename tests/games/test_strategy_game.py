"""GTAlign strategy game: parsing, welfare rewards, malformed replies, disjoint train / held-out splits."""

from __future__ import annotations

import math

import pytest

from games.registry import make_env
from games.strategy_game import DEFAULT_PAYOFFS, parse_strategy, question_type
from services.jobspec import LengthProfile


def test_reward_is_the_cobb_douglas_welfare_of_the_true_type_and_the_choice():
    env = make_env("gtalign-strategy")
    for seed in range(12):
        obs = env.reset(seed)["assistant"]
        assert "Payoffs (user, assistant)" in obs and "DQ:" in obs and "VQ:" in obs
        qtype = question_type(env.record)
        for code in ("DA", "CQ", "AQ"):
            env.reset(seed)
            res = env.step(f"{code}: let me help.")
            u, llm = DEFAULT_PAYOFFS[qtype][code]
            assert res.reward == pytest.approx(math.sqrt(u * llm)) and res.done
            assert res.info["question_type"] == qtype and res.info["actions"] == [code]
    assert {question_type(r) for r in env.records} == {"DQ", "VQ"}


@pytest.mark.parametrize("text", ["", "I would answer directly.", "da cq aq", 12345, "DAQ"])
def test_a_reply_without_a_strategy_code_scores_zero_and_is_counted(text):
    env = make_env("gtalign-strategy")
    env.reset(0)
    res = env.step(text)
    assert res.reward == 0.0 and res.info["invalid_action"] and res.info["n_invalid"] == 1


def test_the_first_code_decides():
    assert parse_strategy("Strategy: CQ, not DA") == "CQ"
    assert parse_strategy("VQ: AQ=(0.8, 0.8)") == "AQ"
    assert parse_strategy("nothing") is None


def test_train_and_heldout_splits_are_the_train_and_test_files_without_a_shared_question():
    train = make_env("gtalign-strategy", options={"split": "train"}).records
    held = make_env("gtalign-strategy", options={"split": "heldout"}).records
    assert make_env("gtalign-strategy").records == train  # a training job's default
    assert len(train) == 2700 and len(held) == 300
    assert not {r.user_prompt for r in train} & {r.user_prompt for r in held}
    fifth = make_env("gtalign-strategy", options={"split": "heldout", "every": 5}).records
    assert fifth == held[::5] and len(fifth) == 60
    assert {question_type(r) for r in fifth} == {"DQ", "VQ"}


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="does not take option"):
        make_env("gtalign-strategy", options={"splt": "train"})
    with pytest.raises(ValueError, match="split must be one of"):
        make_env("gtalign-strategy", options={"split": "dev"})
    with pytest.raises(ValueError, match="does not take option"):
        make_env("sokoban", options={"split": "train"})
    with pytest.raises(ValueError, match="does not take option"):  # the old carve-out is gone
        make_env("gtalign-strategy", options={"heldout_every": 5})
    with pytest.raises(ValueError, match="every must be at least 1"):
        make_env("gtalign-strategy", options={"every": 0})


def test_length_profile_is_deterministic_long_tailed_and_capped():
    prof = LengthProfile(median_tokens=32, sigma=1.0)
    draws = [prof.draw(seed, m, 512) for seed in range(400) for m in range(4)]
    assert draws == [prof.draw(seed, m, 512) for seed in range(400) for m in range(4)]
    draws.sort()
    median, p99 = draws[len(draws) // 2], draws[int(0.99 * len(draws))]
    assert 24 <= median <= 42 and p99 > 5 * median  # a long tail
    assert max(prof.draw(s, 0, 64) for s in range(200)) == 64 and min(draws) >= 1
