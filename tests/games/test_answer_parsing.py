"""Parsers for GRL's think/answer format, hidden chain of thought and GTAlign's four blocks."""

from __future__ import annotations

import json

from games.parsing import parse_four_blocks, parse_hidden_cot, parse_payoff_json, parse_think_answer
from tests.games.worked_example import CELLS

PAYOFF_JSON = json.dumps({k: {"LLM": v[0], "user": v[1]} for k, v in CELLS.items()})


def four_blocks(payoff: str = PAYOFF_JSON, tail: str = "") -> str:
    return (
        f"<thinking>1+1=2</thinking><payoff>{payoff}</payoff><analyze>1+1=2 is correct</analyze>"
        f"<response>1+1=\\boxed{{2}}</response>{tail}"
    )


def test_grl_actions_are_split_capped_and_rebuilt() -> None:
    p = parse_think_answer(
        "<think> go right </think>\n<answer>Right || Down||  || Up</answer>", max_actions=2
    )
    assert p.ok and p.actions == ("Right", "Down")
    assert p.clean == "<think>go right</think><answer>Right||Down</answer>"


def test_grl_prefilled_think_tag_and_special_tokens() -> None:
    p = parse_think_answer("plan</think><answer>Left</answer><|im_end|>")
    assert p.ok and p.think == "plan" and p.actions == ("Left",)


def test_grl_unparsable_gives_no_actions() -> None:
    for text in ("", "Right", "<think>x</think> Right", "<answer>Up</answer>", "<think><answer>Up"):
        p = parse_think_answer(text)
        assert not p.ok and p.actions == ()
    assert parse_think_answer("<answer>Up</answer>", think=False).actions == ("Up",)


def test_hidden_cot_strict_format_and_hidden_reasoning() -> None:
    ok = parse_hidden_cot("<think> secret plan </think> <answer>public text</answer>")
    assert ok.ok and ok.answer == "public text" and ok.think == "secret plan"
    for bad in (
        "<think>a</think></think><answer>x</answer>",
        "<think>secret</think> no answer tags",
        "<answer>x</answer><think>secret</think>",
        "<think>secret never closed <answer>x</answer>",
    ):
        p = parse_hidden_cot(bad)
        assert not p.ok
        assert "secret" not in p.answer


def test_four_blocks_worked_example_parses() -> None:
    p = parse_four_blocks(four_blocks())
    assert p.ok and p.fmt == 1
    assert p.payoff == {k: (float(a), float(b)) for k, (a, b) in CELLS.items()}
    assert p.response == "1+1=\\boxed{2}" and p.analyze == "1+1=2 is correct"
    assert p.reasoning.endswith("</analyze>") and "<response>" not in p.reasoning


def test_four_blocks_format_quirks() -> None:
    # MULTILINE "$": text on a later line still passes the regex; text on the same line does not.
    assert parse_four_blocks(four_blocks(tail="\nextra")).fmt == 1
    same_line = parse_four_blocks(four_blocks(tail=" extra"))
    assert same_line.ok and same_line.fmt == 0  # still scorable, format reward 0
    assert parse_four_blocks("preamble " + four_blocks()).fmt == 0


def test_payoff_json_strictness() -> None:
    assert parse_payoff_json(PAYOFF_JSON) is not None
    curly = PAYOFF_JSON.replace('"', "\u201c", 1)
    assert parse_payoff_json(curly) is not None  # curly quotes are straightened
    python_literal = str({k: {"LLM": v[0], "user": v[1]} for k, v in CELLS.items()})
    assert parse_payoff_json(python_literal) is not None
    data = json.loads(PAYOFF_JSON)
    missing = {k: v for k, v in data.items() if k != "VQ_DA"}
    extra = data | {"XX_DA": {"LLM": 1, "user": 1}}
    boolean = data | {"VQ_DA": {"LLM": True, "user": 1}}
    subkey = data | {"VQ_DA": {"LLM": 1, "User": 1}}
    text = data | {"VQ_DA": {"LLM": "1", "user": 1}}
    for bad in (missing, extra, boolean, subkey, text):
        assert parse_payoff_json(json.dumps(bad)) is None
    for garbage in ("", "{", "[1, 2]", "null", "__import__('os')", "{" * 10000):
        assert parse_payoff_json(garbage) is None


def test_four_blocks_unscorable() -> None:
    assert not parse_four_blocks("just an answer").ok
    assert not parse_four_blocks(four_blocks(payoff="{not json}")).ok
    assert not parse_four_blocks(four_blocks().replace("</response>", "")).ok
