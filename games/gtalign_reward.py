"""GTAlign's utility arithmetic (spec §1.4 steps 2, 4, 5): from a judge score to U, L and the welfare.

The judge call itself lives in judge/; this module is the pure part so that every service computes the
same numbers. Word counts are whitespace splits; lengths of the reasoning are in characters.

Invariants (GTAlign's reward code scores the policy's text as the tokenizer decoded it, special-token ids
skipped; see judge/README.md, "Fidelity to GTAlign's reward code"):
- The text is scored as it is. Only the `<|…|>` chat-control markers (games.parsing.CONTROL_TOKENS) are
  dropped (they stand for special-token ids left in by a decode that did not skip them); literal text such
  as an HTML `<s>strike</s>` is kept, so it counts in the lengths and can break the format regex.
- `parse_output` never raises on model text: a payoff cell that does not fit a float (a 400-digit
  integer) or a payoff nested too deep for the parser makes the payoff unparsable, and the sample scores 0.
- Task terms from a judge are clamped to [0, 1] before they enter U and L (`clamp01`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from games.parsing import FourBlocks, drop_control_tokens, parse_four_blocks
from games.payoff import PayoffMatrix
from games.welfare import get_welfare

EPS = 1e-4


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def logistic_band(n_words: int, lo: float, hi: float, k: float = 0.005) -> float:
    """Soft band-pass on length: σ(k(n − lo)) · σ(k(hi − n))."""
    return _sigmoid(k * (n_words - lo)) * _sigmoid(k * (hi - n_words))


def reasoning_penalty(n_chars: int, scale: float = 500.0) -> float:
    return math.exp(-n_chars / scale)


def word_count(text: str) -> int:
    return len(text.split())


def clamp01(x: float) -> float:
    """A judge verdict as a task term: below 0 counts as 0, above 1 as 1 (GTAlign's max(0, min(1, x)));
    NaN, which that expression would turn into 1, counts as 0."""
    x = float(x)
    return 0.0 if math.isnan(x) else max(0.0, min(1.0, x))


def parse_output(text: str) -> FourBlocks:
    """The four blocks as the reward sees them (games.parsing.parse_four_blocks: only the control markers
    are dropped). Never raises; `ok=False` means the sample scores 0."""
    return parse_four_blocks(text)


@dataclass(frozen=True)
class Utilities:
    user: float
    llm: float
    welfare: float


def utilities(
    *,
    a_user: float,
    a_llm: float,
    fmt: int,
    payoff_reward: float,
    reasoning_chars: int,
    response_words: int,
    output_words: int,
    variant: Literal["main", "ablation"] = "main",
    pareto_score: float = 0.0,
    welfare: str = "cobb_douglas",
) -> Utilities:
    """U and L of spec §1.4 step 4 and their welfare. `variant="ablation"` is the full_zscore L."""
    u = (
        EPS
        + 0.5 * a_user
        + 0.2 * logistic_band(response_words, 20, 500)
        + 0.3 * reasoning_penalty(reasoning_chars)
    )
    long_band = logistic_band(output_words, 500, 1000)
    if variant == "main":
        llm = EPS + 0.2 * fmt + 0.2 * payoff_reward + 0.4 * a_llm + 0.2 * long_band
    elif variant == "ablation":
        llm = EPS + 0.2 * pareto_score + 0.2 * payoff_reward + 0.2 * fmt + 0.35 * a_llm + 0.05 * long_band
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return Utilities(u, llm, float(get_welfare(welfare)(u, llm)))


def score_parsed(
    parsed: FourBlocks,
    text: str,
    a_user: float,
    a_llm: float,
    *,
    variant: Literal["main", "ablation"] = "main",
    pareto_score: float = 0.0,
    welfare: str = "cobb_douglas",
) -> Utilities | None:
    """U, L and welfare of an already parsed output (`text` is what it was parsed from); None if the
    parse failed. The task terms are clamped to [0, 1]."""
    if not parsed.ok or parsed.payoff is None:
        return None
    return utilities(
        a_user=clamp01(a_user),
        a_llm=clamp01(a_llm),
        fmt=parsed.fmt,
        payoff_reward=PayoffMatrix(parsed.payoff).asymmetry_reward(),
        reasoning_chars=len(parsed.reasoning),
        response_words=word_count(parsed.response),
        output_words=word_count(drop_control_tokens(text)),
        variant=variant,
        pareto_score=pareto_score,
        welfare=welfare,
    )


def score_output(
    text: str,
    a_user: float,
    a_llm: float | None = None,
    *,
    variant: Literal["main", "ablation"] = "main",
    pareto_score: float = 0.0,
    welfare: str = "cobb_douglas",
) -> tuple[Utilities | None, FourBlocks]:
    """Parse a four-block output and score it given the judge's task terms (a_llm defaults to a_user).
    Returns (None, parse) when the sample cannot be scored; the spec gives such samples reward 0."""
    parsed = parse_output(text)
    util = score_parsed(
        parsed,
        text,
        a_user,
        a_user if a_llm is None else a_llm,
        variant=variant,
        pareto_score=pareto_score,
        welfare=welfare,
    )
    return util, parsed
