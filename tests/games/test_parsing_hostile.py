"""Hostile model text never raises out of the GTAlign parsers: a payoff cell too large for a float and a
payoff nested 100k deep are malformed (None / ok=False), in the parser, the game's step, PayoffMatrix and
the steering endpoint; literal `<s>` / `</s>` are text, only `<|…|>` markers are dropped."""

from __future__ import annotations

import asyncio
import json

import pytest

from games.data import GTAlignRecord
from games.gtalign_game import GTAlignGame
from games.gtalign_reward import parse_output
from games.parsing import drop_control_tokens, parse_four_blocks, parse_payoff_json
from games.payoff import PayoffMatrix
from gateway.steer import SteerRequest, steer
from tests.games.worked_example import CELLS

HUGE = "1" + "0" * 400  # a valid JSON integer that no float holds
PAYOFF = json.dumps({k: {"LLM": a, "user": b} for k, (a, b) in CELLS.items()})
HUGE_PAYOFF = PAYOFF.replace('"LLM": 4.1', f'"LLM": {HUGE}')
HOSTILE = {
    "huge json int": HUGE_PAYOFF,
    "huge python-literal int": HUGE_PAYOFF.replace('"', "'"),
    "huge int, both cells": HUGE_PAYOFF.replace('"user": 3.5', f'"user": -{HUGE}'),
    "int over 4300 digits": PAYOFF.replace('"LLM": 4.1', '"LLM": ' + "9" * 5000),
    "100k-deep list": "[" * 100_000,
    "100k-deep closed list": "[" * 100_000 + "]" * 100_000,
    "100k-deep dict": '{"a": ' * 100_000 + "1" + "}" * 100_000,
    "100k-deep python literal": "(" * 100_000 + ")" * 100_000,
}


def four_blocks(payoff: str, thinking: str = "1+1=2", response: str = "1+1=\\boxed{2}") -> str:
    return (
        f"<thinking>{thinking}</thinking><payoff>{payoff}</payoff><analyze>DQ_AQ</analyze>"
        f"<response>{response}</response>"
    )


@pytest.mark.parametrize("block", HOSTILE.values(), ids=HOSTILE.keys())
def test_parse_payoff_json_returns_none(block: str) -> None:
    assert parse_payoff_json(block) is None
    assert PayoffMatrix.from_text(block) is None


@pytest.mark.parametrize("block", HOSTILE.values(), ids=HOSTILE.keys())
def test_four_blocks_are_malformed_with_a_reason(block: str) -> None:
    parsed = parse_four_blocks(four_blocks(block))
    assert not parsed.ok and parsed.fmt == 0 and parsed.payoff is None and parsed.error
    assert parse_output(four_blocks(block)) == parsed


def test_reasons_name_the_failure() -> None:
    assert "float" in parse_four_blocks(four_blocks(HUGE_PAYOFF)).error
    assert "deep" in parse_four_blocks(four_blocks("[" * 100_000)).error
    assert "strict" in parse_four_blocks(four_blocks("{not json}")).error


def test_a_large_int_within_float_range_still_parses() -> None:
    """Integer cells that fit a float parse; only the ones beyond float range are refused."""
    big = PAYOFF.replace('"LLM": 4.1', '"LLM": ' + "9" * 300)
    cells = parse_payoff_json(big)
    assert cells is not None and cells["DQ_AQ"][0] == pytest.approx(1e300)


def game() -> GTAlignGame:
    record = GTAlignRecord(
        messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "1+1?"}],
        data_source="math-hard",
        ground_truth="2",
        question="1+1?",
    )
    g = GTAlignGame([record])
    g.reset(0)
    return g


@pytest.mark.parametrize("block", HOSTILE.values(), ids=HOSTILE.keys())
def test_gtalign_step_scores_hostile_payoff_zero(block: str) -> None:
    r = game().step(four_blocks(block))
    assert r.done and r.reward == 0.0
    assert r.info["invalid_action"] and not r.info["needs_judge"] and r.info["fmt"] == 0
    assert r.info["error"]


def test_gtalign_step_still_scores_a_good_payoff() -> None:
    r = game().step(four_blocks(PAYOFF))
    assert r.info["needs_judge"] and not r.info["invalid_action"] and r.info["fmt"] == 1


class Script:
    def __init__(self, *replies: str) -> None:
        self.replies, self.asked = list(replies), 0

    async def __call__(self, messages, max_tokens, temperature, seed) -> dict:
        self.asked += 1
        return {"choices": [{"message": {"content": self.replies.pop(0)}}], "usage": {}}


@pytest.mark.parametrize(
    "block",
    [HUGE_PAYOFF, "[" * 100_000, PAYOFF.replace("4.1", "1e400"), PAYOFF.replace("4.1", "NaN")]
    + [PAYOFF.replace("4.1", "2e6")],
    ids=["huge int", "deep", "inf", "nan", "beyond bound"],
)
def test_steer_reports_a_hostile_stage1_payoff(block: str) -> None:
    chat = Script(f"<payoff>{block}</payoff>", "unused")
    out = asyncio.run(steer(SteerRequest(model="job", question="q"), chat))
    assert not out.ok and out.error.startswith("stage 1") and chat.asked == 1


def test_steer_reports_a_steered_matrix_past_the_request_bound() -> None:
    cells = {k: {"LLM": 1e6, "user": 1e6} for k in CELLS}
    req = SteerRequest(model="job", question="q", payoff=cells, scale_llm=10)
    out = asyncio.run(steer(req, Script("answer")))
    assert out.ok and out.steered_payoff is not None and out.steered_payoff["DQ_AQ"].LLM == 1e6 + 10


def test_literal_s_tags_are_text_and_control_markers_are_dropped() -> None:
    text = four_blocks(PAYOFF, thinking="<s>1+1=3</s> 1+1=2", response="Use <s>old</s> new: 2")
    parsed = parse_four_blocks("<|im_start|>" + text + "<|im_end|><|endoftext|>")
    assert parsed.ok and parsed.fmt == 1
    assert parsed.response == "Use <s>old</s> new: 2" and "<s>1+1=3</s>" in parsed.thinking
    assert parsed.reasoning == text.split("<response>")[0]
    assert parse_four_blocks(text + "</s>").fmt == 0  # trailing text on the line fails the format regex
    assert drop_control_tokens("<s>a</s><|eot_id|>") == "<s>a</s>"
