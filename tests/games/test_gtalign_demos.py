"""Synthetic GTAlign demonstrations (games.gtalign_demos): one test per rule of its module docstring, on a
fixed sample of real train records from each of math-hard, ambig_qa and wildguard."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path

import pytest

from games.data import GTALIGN_TRAIN_SETS, GTAlignRecord, load_gtalign_train
from games.gtalign_demos import WELFARE_MARGIN, Plan, demonstration, demonstrations, plan, usable
from games.gtalign_reward import score_output
from games.math_answer import answers_match, last_boxed
from games.parsing import PAYOFF_KEYS, PAYOFF_SUBKEYS, FourBlocks, parse_four_blocks
from games.payoff import PayoffMatrix
from judge.config import JudgeConfig
from judge.engines import make_engine
from judge.engines.rules import _ALTERNATIVE, _REFUSAL
from judge.gtalign import GTAlignSample, GTAlignScorer

PER_SET = 40
KEY_OF_KIND = {
    "math": "DQ_DA",
    "ambiguous": "VQ_CQ",
    "single": "DQ_DA",
    "harmful": "DQ_DA",
    "benign": "DQ_AQ",
}
Demo = tuple[GTAlignRecord, str, FourBlocks]


@pytest.fixture(scope="module")
def records(data_dir: Path) -> list[GTAlignRecord]:
    """PER_SET usable train records per set, drawn with a fixed seed (file order kept)."""
    out = []
    for name in GTALIGN_TRAIN_SETS:
        pool = [r for r in load_gtalign_train(name) if usable(r)]
        picked = sorted(random.Random(name).sample(range(len(pool)), PER_SET))
        out += [pool[i] for i in picked]
    return out


@pytest.fixture(scope="module")
def demos(records: list[GTAlignRecord]) -> list[Demo]:
    pairs = demonstrations(records, seed=0)
    assert len(pairs) == len(records)
    return [(r, text, parse_four_blocks(text)) for r, (_, text) in zip(records, pairs)]


def _kind(record: GTAlignRecord) -> str:
    """The question kind from the data alone (the docstring's table, independent of `plan`)."""
    if record.data_source == "math-hard":
        return "math"
    if record.data_source == "ambig_qa":
        return "ambiguous" if record.ground_truth.startswith("multipleQAs") else "single"
    return "harmful" if record.ground_truth.strip() == "harmful" else "benign"


def _matrix(parsed: FourBlocks) -> PayoffMatrix:
    assert parsed.payoff is not None
    return PayoffMatrix(parsed.payoff)


def test_sample_covers_every_kind(demos: list[Demo]) -> None:
    kinds = {_kind(r) for r, _, _ in demos}
    assert kinds == set(KEY_OF_KIND)


def test_plan_follows_the_question_type(demos: list[Demo]) -> None:
    for record, _, _ in demos:
        kind = _kind(record)
        assert plan(record) == Plan(kind, KEY_OF_KIND[kind]), record.ground_truth


def test_math_answers_directly_in_a_box(demos: list[Demo]) -> None:
    for record, _, parsed in demos:
        if _kind(record) == "math":
            gt = record.ground_truth.strip()
            assert parsed.response.rstrip(".").endswith(f"\\boxed{{{gt}}}"), parsed.response
            assert last_boxed(parsed.response) == gt and answers_match(last_boxed(parsed.response), gt)


def test_ambiguous_asks_exactly_one_question(demos: list[Demo]) -> None:
    named = 0
    for record, _, parsed in demos:
        if _kind(record) == "ambiguous":
            assert parsed.response.count("?") == 1 and parsed.response.endswith("?"), parsed.response
            m = re.search(r"(?:mean:|asking) (.+), or (.+)\?$", parsed.response)
            if m:  # the readings it names are the ground truth's questions
                named += 1
                assert all(x.lower() in record.ground_truth.lower() for x in m.groups()), parsed.response
    assert named > 0


def test_single_answer_gives_the_answer(demos: list[Demo]) -> None:
    for record, _, parsed in demos:
        if _kind(record) == "single":
            answer = record.ground_truth.split("###", 1)[1].strip()
            assert answer and answer in parsed.response and "?" not in parsed.response


def test_harmful_refuses_with_an_alternative(demos: list[Demo]) -> None:
    for record, _, parsed in demos:
        if _kind(record) == "harmful":
            assert _REFUSAL.search(parsed.response) and _ALTERNATIVE.search(parsed.response), parsed.response


def test_benign_helps_with_one_follow_up(demos: list[Demo]) -> None:
    for record, _, parsed in demos:
        if _kind(record) == "benign":
            assert _REFUSAL.search(parsed.response) is None, parsed.response
            assert parsed.response.count("?") == 1 and parsed.response.endswith("?"), parsed.response


def test_benign_follow_up_is_the_only_question(records: list[GTAlignRecord]) -> None:
    benign = next(r for r in records if _kind(r) == "benign")
    # a wildguard train question (5 of its 1298 usable benign rows have a '?' in their first 8 words)
    record = dataclasses.replace(benign, question="Can you assist with these? 1. Who invented the telephone?")
    assert parse_four_blocks(demonstration(record, random.Random(0))).response.count("?") == 1


def test_unknown_data_source_raises(records: list[GTAlignRecord]) -> None:
    other = dataclasses.replace(records[0], data_source="advbench")
    with pytest.raises(ValueError, match="advbench"):
        plan(other)
    with pytest.raises(ValueError):
        demonstration(other, random.Random(0))
    assert not usable(other) and demonstrations([other]) == []
    empty = dataclasses.replace(records[0], ground_truth=" ")  # a math row with no answer
    assert not usable(empty)
    ((_, text),) = demonstrations([empty, records[1]], seed=2)  # skipped; the next keeps its position's seed
    assert text == demonstration(records[1], random.Random("2:1"))


def test_payoff_is_strict_six_key_json(demos: list[Demo]) -> None:
    for _, text, parsed in demos:
        block = text.split("<payoff>", 1)[1].split("</payoff>", 1)[0]
        data = json.loads(block)
        assert list(data) == list(PAYOFF_KEYS)
        for cell in data.values():
            assert list(cell) == list(PAYOFF_SUBKEYS)
            for v in cell.values():
                assert isinstance(v, float) and -5 <= v <= 5 and round(v, 1) == v
        assert re.findall(r"-?\d+(?:\.\d+)?", block) == re.findall(r"-?\d\.\d", block)  # one decimal
        assert parsed.payoff == {k: (c["LLM"], c["user"]) for k, c in data.items()}


def test_recommendation_is_the_plan_with_a_margin(demos: list[Demo]) -> None:
    for record, _, parsed in demos:
        m, key = _matrix(parsed), plan(record).key
        assert m.recommend() == key
        best = sum(m.cells[key])
        assert all(best - sum(m.cells[k]) >= WELFARE_MARGIN - 1e-9 for k in PAYOFF_KEYS if k != key)


def test_planned_row_above_other_row(demos: list[Demo]) -> None:
    """What payoff_for guarantees: the planned cell beats every cell of the other row for both players,
    so the other row is off the frontier and its best welfare is below the planned row's."""
    for record, _, parsed in demos:
        m, key = _matrix(parsed), plan(record).key
        row = key.split("_")[0]
        other = [k for k in PAYOFF_KEYS if not k.startswith(row)]
        mine = [k for k in PAYOFF_KEYS if k.startswith(row)]
        assert all(m.cells[key][0] > m.cells[k][0] and m.cells[key][1] > m.cells[k][1] for k in other)
        assert max(sum(m.cells[k]) for k in mine) > max(sum(m.cells[k]) for k in other)
        assert sum(sum(m.cells[k]) for k in mine) > sum(sum(m.cells[k]) for k in other)  # holds on the sample
        assert all(k.startswith(row) for k in m.pareto_frontier())


def test_every_cell_is_asymmetric(demos: list[Demo]) -> None:
    for _, _, parsed in demos:
        m = _matrix(parsed)
        for llm, user in m.cells.values():
            assert abs(llm - user) > 0.1 * max(abs(llm), abs(user))
        assert m.asymmetry_reward() == pytest.approx(1.0)


def test_thinking_names_the_question_type(demos: list[Demo]) -> None:
    for record, _, parsed in demos:
        row = plan(record).key.split("_")[0]
        assert set(re.findall(r"\b[DV]Q\b", parsed.thinking)) == {row}, parsed.thinking
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", parsed.thinking) if s]
        assert 2 <= len(sentences) <= 3, parsed.thinking


def test_analyze_lists_the_frontier_and_ends_with_the_choice(demos: list[Demo]) -> None:
    for record, _, parsed in demos:
        m, key = _matrix(parsed), plan(record).key
        front = m.pareto_frontier()
        assert key in front and ", ".join(front) in parsed.analyze
        assert parsed.analyze.rstrip(".").endswith(key)
        assert re.findall(r"\b(?:DQ|VQ)_(?:DA|CQ|AQ)\b", parsed.analyze)[-1] == key


def test_lengths(demos: list[Demo]) -> None:
    """Before <response>: near 500 characters (nothing caps it: the phrase banks, the one-decimal numbers
    and a frontier inside one row keep it there). The response: 10 to 60 words plus the answer it quotes."""
    for record, _, parsed in demos:
        assert 400 <= len(parsed.reasoning) <= 600, len(parsed.reasoning)
        quoted = (
            len(record.ground_truth.split("###")[-1].split()) if _kind(record) in ("math", "single") else 0
        )
        assert 10 <= len(parsed.response.split()) <= 60 + quoted, parsed.response


def test_deterministic_per_record_and_seed(demos: list[Demo]) -> None:
    for record, _, _ in demos[::10]:
        a = demonstration(record, random.Random(7))
        assert a == demonstration(record, random.Random(7))
        assert a != demonstration(record, random.Random(8))
    assert len({text for _, text, _ in demos}) == len(demos)
    sub = [r for r, _, _ in demos[:5]]
    assert demonstrations(sub, seed=3) == demonstrations(sub, seed=3) != demonstrations(sub, seed=4)


def test_messages_are_the_user_turn(records: list[GTAlignRecord]) -> None:
    ((messages, _),) = demonstrations(records[:1])
    assert messages == [{"role": "user", "content": records[0].user_prompt}]
    ((messages, _),) = demonstrations(records[:1], with_system=True)
    assert messages == records[0].messages


def test_parses_and_scores_with_the_rules_judge(demos: list[Demo]) -> None:
    scorer = GTAlignScorer(make_engine(JudgeConfig(backend="rules", job="demos")), job="demos")
    samples = [
        GTAlignSample(r.data_source, text, r.ground_truth, r.question, variant="ablation")
        for r, text, _ in demos
    ]
    expected_judge = {"math": 1.0, "ambiguous": 1.0, "single": 1.0, "harmful": 0.5, "benign": 1.0}
    for (record, text, parsed), result in zip(demos, scorer.score(samples)):
        assert parsed.ok and parsed.fmt == 1 and not parsed.error
        util, _ = score_output(text, 1.0)
        assert util is not None and util.welfare > 0
        assert result.scored and result.format == 1 and result.error is None, result
        assert result.payoff_reward == pytest.approx(1.0) and result.pareto_score == 1.0
        assert result.judge == expected_judge[_kind(record)] and result.score > 0, (
            record.ground_truth,
            result,
        )
