"""GTAlign inference-time payoff steering (spec §1.8): change the model's behaviour by editing the payoffs it
estimates, without retraining.

1. Stage 1: ask the model for its four-block answer and keep the text up to `</payoff>`; parse the
   six-cell payoff matrix (games.parsing's strict parser, which never raises on model text); a matrix with a
   cell that is not finite or beyond ±PAYOFF_BOUND is refused. A caller may skip this stage by sending one.
2. Transform the matrix (games.payoff.PayoffMatrix.transformed), e.g. a pricing change that makes LLM
   tokens costlier (`scale_llm` < 0) or a less patient user (`scale_user` < 0).
3. Choose the action: the keys with the largest LLM·user product (PayoffMatrix.nash_product_choices),
   reduced to their action part (DA / CQ / AQ); one of them at random (seeded).
4. Stage 2: ask the question again with a one-sentence instruction for the chosen action.

The rollout chat endpoint has no stop strings, so stage 1 generates up to `stage1_max_tokens` and the text is
cut at the first `</payoff>` here.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Awaitable, Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from games.parsing import PAYOFF_KEYS
from games.payoff import ACTIONS, PayoffMatrix
from gateway.api_models import Text

Action = Literal["DA", "CQ", "AQ"]

INSTRUCTION = """Answer in exactly four tagged blocks, in this order and with nothing outside them:
<thinking> 2-5 sentences without numbers: is the question definite (DQ) or vague/ambiguous (VQ)? \
Weigh the three actions - a direct answer (DA), a clarifying question only (CQ), a brief answer plus one \
follow-up question (AQ) - for both you and the user: risk of a wrong answer, ambiguity, the user's time \
and effort, token cost, satisfaction and the chance of success. </thinking>
<payoff> strict JSON with exactly the keys DQ_AQ, DQ_CQ, DQ_DA, VQ_AQ, VQ_CQ, VQ_DA; each value is \
{"LLM": number, "user": number}, higher is better, 0 is neutral, roughly -5 to 5, one decimal at most. \
</payoff>
<analyze> name the Pareto-optimal keys, say why the others are dominated, and recommend one key: the \
highest LLM+user sum, then the higher user payoff, then the higher LLM payoff. </analyze>
<response> carry out the recommended action. DA: only a concise answer. CQ: exactly one clarifying \
question and no answer. AQ: a short answer and exactly one focused follow-up question. Do not mention \
payoffs or tags. </response>

Question: """

ACTION_INSTRUCTIONS: dict[str, str] = {
    "DA": "Answer the question directly and concisely.",
    "CQ": "Do not answer yet: ask one clarifying question about what the user means or wants.",
    "AQ": "Answer the question clearly, then suggest one direction in which the conversation could continue.",
}


PAYOFF_BOUND = 1e6  # the largest |payoff| a request or a stage-1 matrix may hold


class PayoffCell(BaseModel):
    model_config = ConfigDict(extra="forbid")
    LLM: float = Field(ge=-PAYOFF_BOUND, le=PAYOFF_BOUND)
    user: float = Field(ge=-PAYOFF_BOUND, le=PAYOFF_BOUND)


class PayoffValues(BaseModel):
    """A cell of a reported matrix: the steered one may lie up to 11 past PAYOFF_BOUND."""

    LLM: float
    user: float


class SteerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Text = Field(min_length=1, max_length=200, description="The job id whose model answers.")
    question: Text = Field(min_length=1, max_length=20_000)
    scale_llm: float = Field(
        0.0,
        ge=-10,
        le=10,
        description="Added to every LLM payoff (user gets +0 DA, +0.5 CQ, +1 AQ). Wins over scale_user.",
    )
    scale_user: float = Field(
        0.0,
        ge=-10,
        le=10,
        description="Added to every user payoff when scale_llm is 0 (LLM gets +1 DA, +0 CQ, +0.5 AQ).",
    )
    payoff: dict[str, PayoffCell] | None = Field(None, description="Use this matrix instead of stage 1.")
    temperature: float = Field(1.0, ge=0, le=2)
    stage1_max_tokens: int = Field(2048, ge=1, le=8192)
    max_tokens: int = Field(512, ge=1, le=8192, description="Stage 2 (the user-visible answer).")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Seeds the action draw and generation.")

    @field_validator("payoff")
    @classmethod
    def _six_keys(cls, value: dict[str, PayoffCell] | None) -> dict[str, PayoffCell] | None:
        if value is not None and set(value) != set(PAYOFF_KEYS):
            raise ValueError(f"payoff needs exactly the keys {', '.join(PAYOFF_KEYS)}")
        return value


class SteerResponse(BaseModel):
    ok: bool
    error: str | None = None
    action: Action | None = None
    candidates: list[Action] = Field(default_factory=list, description="Actions with the best LLM·user.")
    payoff: dict[str, PayoffValues] | None = Field(None, description="The matrix before the transform.")
    steered_payoff: dict[str, PayoffValues] | None = None
    stage1_text: str | None = None
    response: str | None = None
    usage: dict[str, int] = Field(default_factory=dict)


Chat = Callable[[list[dict[str, str]], int, float, int | None], Awaitable[dict]]
_PAYOFF_BLOCK = re.compile(r"<payoff>(.*?)</payoff>", re.DOTALL)


def choose_action(matrix: PayoffMatrix, rng: random.Random) -> tuple[Action, list[Action]]:
    """One action among the keys with the largest LLM·user product (ties drawn uniformly)."""
    candidates: list[Action] = []
    for key in matrix.nash_product_choices():
        action = key.split("_")[1]
        if action not in candidates:
            candidates.append(action)  # type: ignore[arg-type]
    candidates.sort(key=ACTIONS.index)
    return rng.choice(candidates), candidates


def _as_cells(matrix: PayoffMatrix) -> dict[str, PayoffValues]:
    return {k: PayoffValues(LLM=v["LLM"], user=v["user"]) for k, v in matrix.to_json().items()}


def _content(completion: dict) -> tuple[str, int]:
    text = completion["choices"][0]["message"]["content"]
    return text, int(completion.get("usage", {}).get("completion_tokens", 0))


async def _stage1(
    req: SteerRequest, chat: Chat, usage: dict[str, int]
) -> tuple[PayoffMatrix | None, str, str]:
    """(matrix, stage-1 text, "") or (None, stage-1 text, why there is nothing to steer)."""
    completion = await chat(
        [{"role": "user", "content": INSTRUCTION + req.question}],
        req.stage1_max_tokens,
        req.temperature,
        req.seed,
    )
    text, usage["stage1_tokens"] = _content(completion)
    end = text.find("</payoff>")
    stage1_text = text if end < 0 else text[:end] + "</payoff>"
    block = _PAYOFF_BLOCK.search(stage1_text)
    if block is None:
        return None, stage1_text, "no complete <payoff> block"
    matrix = PayoffMatrix.from_text(block.group(1))  # None, never an exception, on hostile text
    if matrix is None:
        return None, stage1_text, "a payoff block that is not the strict six-key JSON"
    values = [v for cell in matrix.cells.values() for v in cell]
    if not all(math.isfinite(v) and abs(v) <= PAYOFF_BOUND for v in values):
        return None, stage1_text, f"a payoff cell that is not a finite number within ±{PAYOFF_BOUND:g}"
    return matrix, stage1_text, ""


async def steer(req: SteerRequest, chat: Chat) -> SteerResponse:
    """Run the two stages; `chat(messages, max_tokens, temperature, seed)` returns an OpenAI completion."""
    usage: dict[str, int] = {}
    stage1_text = None
    if req.payoff is not None:
        matrix = PayoffMatrix({k: (c.LLM, c.user) for k, c in req.payoff.items()})
    else:
        parsed, stage1_text, why = await _stage1(req, chat, usage)
        if parsed is None:
            error = (
                f"stage 1: the model wrote {why}, so there is nothing to steer "
                f"(is this model trained on the GTAlign format?)"
            )
            return SteerResponse(ok=False, error=error, stage1_text=stage1_text, usage=usage)
        matrix = parsed
    steered = matrix.transformed(scale_llm=req.scale_llm, scale_user=req.scale_user)
    action, candidates = choose_action(steered, random.Random(req.seed))
    prompt = f"{req.question}\n\n{ACTION_INSTRUCTIONS[action]}"
    completion = await chat([{"role": "user", "content": prompt}], req.max_tokens, req.temperature, req.seed)
    answer, usage["stage2_tokens"] = _content(completion)
    return SteerResponse(
        ok=True,
        action=action,
        candidates=candidates,
        payoff=_as_cells(matrix),
        steered_payoff=_as_cells(steered),
        stage1_text=stage1_text,
        response=answer,
        usage=usage,
    )
