"""Payoff steering (spec §1.8): the transform and the Nash-product action choice on the spec's worked
example, and the two-stage orchestration over a chat function."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from games.payoff import PayoffMatrix
from gateway.steer import ACTION_INSTRUCTIONS, INSTRUCTION, SteerRequest, choose_action, steer

# spec §1.4 worked example, (LLM, user)
WORKED = {
    "DQ_AQ": (4.1, 3.5),
    "DQ_CQ": (3.6, 2.0),
    "DQ_DA": (2.8, 4.1),
    "VQ_AQ": (3.0, 2.8),
    "VQ_CQ": (1.0, 1.3),
    "VQ_DA": (1.0, 1.0),
}


def as_json(cells) -> str:
    return json.dumps({k: {"LLM": v[0], "user": v[1]} for k, v in cells.items()})


def test_nash_product_choice_and_steering_flips_it():
    matrix = PayoffMatrix(WORKED)
    assert choose_action(matrix, random.Random(0)) == ("AQ", ["AQ"])  # DQ_AQ: 4.1 · 3.5 = 14.35
    # an impatient user (every user payoff −4; LLM +1 DA, +0.5 AQ): DQ_DA = 3.8 · 0.1 is the only
    # positive product
    steered = matrix.transformed(scale_user=-4)
    assert steered.cells["DQ_DA"] == (3.8, 0.1) and steered.cells["DQ_AQ"] == (4.6, -0.5)
    assert choose_action(steered, random.Random(0)) == ("DA", ["DA"])
    # costlier LLM tokens (LLM −2; user +1 AQ, +0.5 CQ) keep AQ here: DQ_AQ = 2.1 · 4.5
    assert choose_action(matrix.transformed(scale_llm=-2), random.Random(0))[0] == "AQ"


def test_ties_are_drawn_uniformly_with_a_seed():
    tie = PayoffMatrix({k: (1.0, 1.0) for k in WORKED} | {"DQ_CQ": (2.0, 2.0), "VQ_DA": (2.0, 2.0)})
    picks = {choose_action(tie, random.Random(seed))[0] for seed in range(20)}
    assert picks == {"DA", "CQ"} and choose_action(tie, random.Random(0))[1] == ["DA", "CQ"]


class Recorder:
    """A chat function answering from a script, recording what it was asked."""

    def __init__(self, replies):
        self.replies, self.asked = list(replies), []

    async def __call__(self, messages, max_tokens, temperature, seed):
        self.asked.append((messages, max_tokens, temperature, seed))
        return {"choices": [{"message": {"content": self.replies.pop(0)}}], "usage": {"completion_tokens": 7}}


def test_two_stages_with_payoff_cut_at_the_closing_tag():
    stage1 = (
        f"<thinking>clear question</thinking><payoff>{as_json(WORKED)}</payoff><analyze>DQ_AQ</analyze>..."
    )
    chat = Recorder([stage1, "Four. Want a harder one?"])
    out = asyncio.run(
        steer(
            SteerRequest(
                model="job", question="2+2?", scale_user=-4, seed=3, stage1_max_tokens=64, max_tokens=32
            ),
            chat,
        )
    )
    assert out.ok and out.action == "DA" and out.candidates == ["DA"]
    assert out.stage1_text.endswith("</payoff>") and "<analyze>" not in out.stage1_text
    assert out.payoff["DQ_AQ"].LLM == 4.1 and out.steered_payoff["DQ_DA"].user == 0.1
    (first, n1, _, _), (second, n2, _, _) = chat.asked
    assert first[0]["content"] == INSTRUCTION + "2+2?" and n1 == 64
    assert second[0]["content"] == f"2+2?\n\n{ACTION_INSTRUCTIONS['DA']}" and n2 == 32
    assert out.response == "Four. Want a harder one?"
    assert out.usage == {"stage1_tokens": 7, "stage2_tokens": 7}


def test_unparseable_stage1_is_reported_not_guessed():
    chat = Recorder(["<payoff>{not json}</payoff> rest"])
    out = asyncio.run(steer(SteerRequest(model="job", question="q"), chat))
    assert not out.ok and "strict six-key JSON" in out.error and len(chat.asked) == 1
    out = asyncio.run(steer(SteerRequest(model="job", question="q"), Recorder(["no blocks at all"])))
    assert not out.ok and "no complete <payoff> block" in out.error


def test_given_payoff_skips_stage1_and_is_validated():
    chat = Recorder(["ok"])
    cells = {k: {"LLM": v[0], "user": v[1]} for k, v in WORKED.items()}
    out = asyncio.run(steer(SteerRequest(model="job", question="q", payoff=cells), chat))
    assert out.ok and out.action == "AQ" and out.stage1_text is None and len(chat.asked) == 1
    with pytest.raises(ValueError, match="exactly the keys"):
        SteerRequest(model="job", question="q", payoff={"DQ_AQ": {"LLM": 1, "user": 1}})
