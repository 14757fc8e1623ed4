"""Training reads GTAlign's train files with every test prompt removed; evaluation reads the test files
(games/data.py load_split). Counted on the vendored files, compared on the last user message."""

from __future__ import annotations

import pytest

from games.data import gtalign_path, load_gtalign, load_gtalign_train, load_split
from games.registry import make_env


@pytest.mark.parametrize(
    "name, rows, removed, shared_test_rows",
    [("math-hard", 3176, 394, 274), ("wildguard", 2700, 10, 10), ("ambig_qa", 2700, 0, 0)],
)
def test_the_train_split_loses_exactly_the_rows_whose_prompt_is_in_the_test_file(
    name, rows, removed, shared_test_rows
):
    raw, test = load_gtalign(gtalign_path(name, "train")), load_gtalign(name)
    train = load_gtalign_train(name)
    assert len(raw) == rows and len(train) == rows - removed
    test_prompts = {r.user_prompt for r in test}
    assert not {r.user_prompt for r in train} & test_prompts
    raw_prompts = {r.user_prompt for r in raw}
    assert sum(r.user_prompt in raw_prompts for r in test) == shared_test_rows  # data/README.md's count
    kept = iter(train)  # file order is kept: train is raw minus the shared rows
    assert all(r is next(kept) for r in raw if r.user_prompt not in test_prompts)


def test_every_game_on_a_gtalign_set_trains_on_the_train_split_unless_told_test():
    test_math = {r.question for r in load_gtalign("math-hard")}
    math = make_env("math")
    assert len(math.problems) == 2782 and not {p.question for p in math.problems} & test_math
    assert len(make_env("math", options={"split": "test"}).problems) == 353
    assert len(make_env("gtalign").records) == 2782
    assert len(make_env("gtalign", "wildguard", {"split": "test"}).records) == 300
    assert len(make_env("redteam").seeds) == 2690
    assert len(make_env("redteam", "advbench").seeds) == 520  # no train split: its test file


def test_split_errors_are_clear():
    with pytest.raises(ValueError, match="no train split"):
        load_split("advbench", "advbench", "train")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        make_env("math", options={"split": "dev"})
    path = str(gtalign_path("math-hard"))
    assert len(make_env("math", path).problems) == 353  # a file is read as it is
    with pytest.raises(ValueError, match="a data file .* is read as it is"):
        make_env("math", path, {"split": "train"})
