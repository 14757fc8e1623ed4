"""Episode runner and T-PPO windowed rollout on real games with the tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from games.registry import make_env
from rollout.engine import SamplingParams, make_engine
from rollout.episodes import EpisodeRunner
from rollout.tppo import WindowedRollout


@pytest.fixture(scope="module")
def engine(tiny_model_path):
    return make_engine("transformers", tiny_model_path, threads=1)


def test_multi_turn_group_shares_seed_and_masks_only_generated_tokens(engine):
    runner = EpisodeRunner(
        engine,
        lambda: make_env("sokoban"),
        "job",
        "sokoban",
        SamplingParams(max_tokens=12, seed=0),
        max_turns=3,
    )
    eps, trajs = runner.run_group(seed=5, group_size=3)
    assert len({e.group_id for e in eps}) == 1 and {e.seed for e in eps} == {5}
    assert len(trajs) == 3
    for ep, t in zip(eps, trajs):
        assert len(ep.turns) == 3  # the tiny model never solves it: max turns reached
        assert ep.info["n_invalid"] >= 1  # random text is unparsable: penalised, counted, no exception
        gen = t.versions != -1
        assert np.array_equal(gen, t.loss_mask.astype(bool))
        assert int(t.loss_mask.sum()) == sum(tr.token_end - tr.token_start for tr in ep.turns)
        assert t.rewards[-1] == 0 or t.rewards.nonzero()[0][-1] == np.nonzero(t.loss_mask)[0][-1]
        assert t.reward == pytest.approx(ep.rewards["player"])
        # the context the engine saw for turn 2 is a prefix of the trajectory
        assert ep.turns[1].token_start > ep.turns[0].token_end


def test_context_tokens_equal_the_chat_template_rendering(engine):
    runner = EpisodeRunner(
        engine,
        lambda: make_env("sokoban"),
        "job",
        "sokoban",
        SamplingParams(max_tokens=6, seed=1),
        max_turns=2,
    )
    eps, (t,) = runner.run_group(seed=1, group_size=1)
    tok = engine.tokenizer
    text = tok.decode(t.token_ids)
    assert text.count("<|im_start|>user") == 2 and text.count("<|im_start|>assistant") == 2


def test_two_role_game_gives_role_tagged_trajectories(engine):
    runner = EpisodeRunner(
        engine,
        lambda: make_env("tictactoe"),
        "job",
        "tictactoe",
        SamplingParams(max_tokens=8, seed=0),
        max_turns=4,
    )
    eps, trajs = runner.run_group(seed=0, group_size=2)
    assert {t.role for t in trajs} <= {"X", "O"}
    for ep in eps:
        assert ep.done and sum(ep.rewards.values()) == pytest.approx(0.0)  # zero-sum (forfeit)


def test_tppo_windows_continue_under_new_versions_and_refill(engine):
    w = WindowedRollout(
        engine,
        lambda: make_env("math"),
        "job",
        "math",
        batch_size=4,
        group_size=2,
        window=8,
        max_response_tokens=20,
        sampling=SamplingParams(temperature=1.0, seed=0),
    )
    v0 = engine.version
    s0 = w.step()
    assert [t.finish_reason for t in s0].count("window") + w.finished == 4
    engine.load_weights([], version=v0 + 1)
    steps = [w.step() for _ in range(2)]
    ended = [t for seg in [s0] + steps for t in seg if t.finished]
    assert ended and all(t.reward != 0 or t.rewards[-1] == t.reward for t in ended)
    for seg in steps:
        for t in seg:
            window = t.loss_mask.astype(bool)
            assert window.sum() <= 8  # policy loss on the current window only
            assert set(t.versions[window].tolist()) == {v0 + 1}
    long = [t for t in steps[-1] if t.segment == 2]
    assert long and {v0, v0 + 1} <= set(long[0].versions.tolist())
    assert len(w.active) + w.finished >= 4  # slots refilled with new groups
    with pytest.raises(ValueError, match="window"):
        WindowedRollout(
            engine, lambda: make_env("math"), "j", "math", 2, 1, window=30, max_response_tokens=20
        )


def test_tppo_with_imposed_lengths_ends_each_sequence_at_its_drawn_length(engine):
    from services.jobspec import LengthProfile

    prof = LengthProfile(median_tokens=6, sigma=1.0)
    w = WindowedRollout(
        engine,
        lambda: make_env("gtalign-strategy"),
        "job",
        "gtalign-strategy",
        batch_size=6,
        group_size=3,
        window=4,
        max_response_tokens=24,
        sampling=SamplingParams(seed=0),
        lengths=prof,
    )
    ended = []
    for _ in range(8):
        for t in w.step():
            if t.finished:
                ended.append(t)
    assert ended
    drawn = {prof.draw(t.meta["seed"], m, 24) for t in ended for m in range(3)}
    for t in ended:  # EOS ignored: every response is exactly one of its group's drawn lengths
        assert t.num_generated in drawn
        assert t.finish_reason == ("length" if t.num_generated == 24 else "stop")
        assert 0.0 <= t.reward <= 1.0 and t.data_source == "gtalign-strategy"
    lengths = sorted({t.num_generated for t in ended})
    assert len(lengths) > 1  # a distribution, not one length


def test_episode_runner_uses_the_drawn_length_per_member(engine):
    from services.jobspec import LengthProfile

    prof = LengthProfile(median_tokens=5, sigma=1.5)
    runner = EpisodeRunner(
        engine,
        lambda: make_env("gtalign-strategy"),
        "job",
        "gtalign-strategy",
        SamplingParams(max_tokens=30, seed=0),
        max_turns=1,
        lengths=prof,
    )
    _, trajs = runner.run_group(seed=3, group_size=4)
    assert [t.num_generated for t in trajs] == [prof.draw(3, i, 30) for i in range(4)]
