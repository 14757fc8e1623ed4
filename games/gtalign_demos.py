"""Synthetic four-block demonstrations of GTAlign's turn, for a supervised warm start of small models.

Every demonstration is `<thinking>…</thinking><payoff>{JSON}</payoff><analyze>…</analyze><response>…
</response>` built from a TRAIN record (games.data.load_gtalign_train) and a `random.Random`, under these
rules (tests/games/test_gtalign_demos.py checks each of them):

- The question type decides the strategy the response implements (`plan`):
  math-hard → DQ_DA, a direct answer ending in `\\boxed{<ground truth>}`; ambig_qa `multipleQAs###…` →
  VQ_CQ, exactly one clarifying question (it names readings from the ground truth when it has them);
  ambig_qa `singleAnswer###a` → DQ_DA answering `a`; wildguard `harmful` → DQ_DA, a refusal in wording the
  rules judge recognises (judge/engines/rules.py `_REFUSAL`) that offers a safe alternative
  (`_ALTERNATIVE`); wildguard `unharmful` → DQ_AQ, a brief helpful answer with no refusal phrase and one
  follow-up question. Any other data_source raises ValueError.
- The payoff is GTAlign's strict JSON: exactly the six keys DQ_AQ … VQ_DA, each {"LLM": x, "user": y} with
  one decimal in [-5, 5]. The planned key is the one games.payoff.PayoffMatrix.recommend() picks (the
  prompt's tie-break: max LLM+user, then user, then LLM) with a welfare margin of at least 0.3 over every
  other cell; the planned row (DQ or VQ) scores above the other row; in every cell LLM and user differ by
  more than 10% of the larger magnitude, so GTAlign's asymmetry reward is 1.
- `<thinking>` is 2–3 short sentences that name the question type (DQ or VQ); `<analyze>` lists the
  Pareto frontier (PayoffMatrix.pareto_frontier()) and ends with the chosen key, so the last strategy it
  names is on the frontier (what the rules Pareto judge checks).
- Lengths are set for GTAlign's length terms (games.gtalign_reward.utilities): everything before
  <response> stays near 500 characters (the reasoning penalty exp(-chars/500)); the response has 10 to 60
  words plus a quoted answer (math and singleAnswer replies sit just under the logistic band's start at
  20 words, which costs them under 0.01 of the utility).
- Wording comes from small phrase banks and the numbers from `rng`: the same record and seed give the same
  text; different records or seeds give different texts.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from games.data import GTAlignRecord
from games.parsing import PAYOFF_KEYS
from games.payoff import ACTIONS, USER_TYPES, PayoffMatrix

DEMO_VERSION = 2  # bump when the rules or phrase banks change: warm-start caches key on it
WELFARE_MARGIN = 0.3
SOURCES = ("math-hard", "ambig_qa", "wildguard")
# words that must not reach a helpful response through a quoted question (the benign rule: no refusal)
_REFUSAL_LIKE = re.compile(
    r"\b(sorry|afraid|unable|cannot|can't|can not|won't|will not|decline|refuse|guidelines|polic(y|ies)|"
    r"principles|as an ai|not able)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Plan:
    """What a record's demonstration does: its question kind and the payoff key it implements."""

    kind: str  # math | ambiguous | single | harmful | benign
    key: str  # e.g. DQ_DA


def plan(record: GTAlignRecord) -> Plan:
    """The question kind and the recommended key of a record (the module docstring's table). A math or
    singleAnswer record without an answer to give has no demonstration (ValueError; see `usable`)."""
    src, gt = record.data_source, record.ground_truth
    if src == "math-hard":
        if not gt.strip():
            raise ValueError(f"math-hard record {record.index} has no ground truth to put in \\boxed{{}}")
        return Plan("math", "DQ_DA")
    if src == "ambig_qa":
        label, _, answer = gt.partition("###")
        if label.strip().lower() == "singleanswer" and not answer.strip():
            raise ValueError(f"ambig_qa record {record.index} is singleAnswer without an answer")
        label = label.strip().lower()
        return Plan("ambiguous", "VQ_CQ") if label == "multipleqas" else Plan("single", "DQ_DA")
    if src == "wildguard":
        harmful = gt.strip().lower() == "harmful"
        return Plan("harmful", "DQ_DA") if harmful else Plan("benign", "DQ_AQ")
    raise ValueError(f"no demonstration rule for data_source {src!r} (rules exist for {', '.join(SOURCES)})")


def usable(record: GTAlignRecord) -> bool:
    """Whether `plan` has a rule for the record (math-hard has a few rows with an empty ground truth)."""
    try:
        plan(record)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- payoff
def _tenths(rng: random.Random, lo: float, hi: float) -> float:
    return rng.randint(round(lo * 10), round(hi * 10)) / 10


def _asymmetric(llm: float, user: float) -> bool:
    return user != llm and abs(user - llm) / max(abs(user), abs(llm), 1e-8) > 0.1


def _cell(rng: random.Random, lo: float, hi: float) -> tuple[float, float]:
    while True:
        llm, user = _tenths(rng, lo, hi), _tenths(rng, lo, hi)
        if _asymmetric(llm, user):
            return llm, user


def _rival(rng: random.Random, best: tuple[float, float]) -> tuple[float, float] | None:
    """A trade-off cell: better than `best` for one player, worse in welfare by at least the margin, so it
    joins the Pareto frontier without changing the recommendation."""
    llm, user = best
    gain, loss = _tenths(rng, 0.2, 0.8), _tenths(rng, 0.5 + WELFARE_MARGIN, 2.5)
    cell = (llm + gain, user - loss) if rng.random() < 0.5 else (llm - loss, user + gain)
    cell = (round(cell[0], 1), round(cell[1], 1))
    ok = all(-5 <= v <= 5 for v in cell) and _asymmetric(*cell)
    return cell if ok else None


def payoff_for(key: str, rng: random.Random) -> PayoffMatrix:
    """A matrix whose recommended key is `key`, by the rules of the module docstring. About half of the
    matrices get a trade-off cell in the same row, so the frontier has more than one point."""
    if key not in PAYOFF_KEYS:
        raise ValueError(f"unknown payoff key {key!r}")
    row = key.split("_")[0]
    for _ in range(1000):
        cells = {}
        for u in USER_TYPES:
            for a in ACTIONS:
                k = f"{u}_{a}"
                lo, hi = (2.8, 4.6) if k == key else (0.4, 3.0) if u == row else (-2.5, 1.5)
                cells[k] = _cell(rng, lo, hi)
        if rng.random() < 0.5:
            other = rng.choice([f"{row}_{a}" for a in ACTIONS if f"{row}_{a}" != key])
            cells[other] = _rival(rng, cells[key]) or cells[other]
        best = sum(cells[key])
        if all(best - sum(v) >= WELFARE_MARGIN - 1e-9 for k, v in cells.items() if k != key):
            return PayoffMatrix({k: cells[k] for k in PAYOFF_KEYS})
    raise RuntimeError(f"could not draw a payoff matrix recommending {key}")  # pragma: no cover


def payoff_json(matrix: PayoffMatrix) -> str:
    """The strict JSON of the <payoff> block, compact (its characters count in the reasoning penalty)."""
    return json.dumps(matrix.to_json(), separators=(",", ":"))


# ---------------------------------------------------------------- phrase banks
THINKING = {
    "math": [
        "The user asks a clear, well-posed math problem, so the question type is DQ.",
        "This is a definite math question with one exact answer: DQ.",
        "The problem is fully specified, so I classify it as DQ.",
    ],
    "ambiguous": [
        "The question can be read in several ways, so it is VQ.",
        "This question is vague: it has more than one plausible meaning (VQ).",
        "The user's question is ambiguous, so the type is VQ.",
    ],
    "single": [
        "The question is clear and has one answer, so it is DQ.",
        "This is a definite factual question: DQ.",
        "The user asks a specific fact with a single answer (DQ).",
    ],
    "harmful": [
        "The request asks for harmful help; it is clear what is wanted, so DQ.",
        "This is a clear request for something unsafe (DQ).",
        "The user clearly asks for harmful content, so the type is DQ.",
    ],
    "benign": [
        "The request is clear and safe to help with, so it is DQ.",
        "This is a definite, harmless request: DQ.",
        "The user asks a clear question that is fine to answer (DQ).",
    ],
}
STRATEGY_NOTE = {
    "DQ_DA": [
        "A direct answer costs the user the least effort; a clarifying question would only add a turn.",
        "Answering directly is cheapest for both sides and the risk of a wrong reading is low.",
    ],
    "VQ_CQ": [
        "Answering now risks the wrong reading; one clarifying question resolves it cheaply.",
        "A direct answer would likely miss the intended meaning, so asking first helps both sides.",
    ],
    "DQ_AQ": [
        "A brief answer plus one follow-up question helps now and lets the user steer.",
        "Answering with one follow-up keeps it short and adds little user effort.",
    ],
}
MATH_RESPONSE = [
    "Working through the problem step by step and simplifying carefully, the final answer is \\boxed{%s}.",
    "Setting up the relations given in the problem and solving them, the result is \\boxed{%s}.",
    "After computing each quantity from the given conditions and checking the result, the answer is \\boxed{%s}.",
]
SINGLE_RESPONSE = [
    "The answer is %s. That is the commonly cited answer to this question.",
    "It is %s, according to the standard sources on this topic.",
    "%s is the answer to your question, based on the usual references.",
]
CLARIFY_GENERIC = [
    "Your question could refer to more than one thing. Could you tell me which time, place or version you mean?",
    "This depends on how the question is meant. Do you mean a specific year, country or edition?",
    "There are several interpretations here. Which specific context or period are you asking about?",
]
CLARIFY_READINGS = [
    "Your question could mean different things. Do you mean: %s, or %s?",
    "There are several interpretations here. Are you asking %s, or %s?",
]
REFUSAL = [
    "I'm sorry, but I can't help with that request because it could cause real harm. "
    "Instead, I'd be happy to share general safety information or point you to legitimate resources.",
    "I cannot assist with this, as it could hurt people or break the law. "
    "However, I can help with a safe and legal alternative if you tell me more about your goal.",
    "I won't provide that, since it would be unsafe. "
    "Alternatively, I can help you with general, lawful information on the topic instead.",
]
BENIGN_RESPONSE = [
    "Sure. Here is a short answer about %s: the key points are the background, the main factors "
    "involved and the practical steps that follow from them. Would you like more detail on one of these?",
    "Happy to help with %s. In brief, it comes down to the context, the most important causes and "
    "what they mean in practice. Should I expand on any part of this?",
    "Here is an overview of %s: start from the basic facts, then look at the main considerations "
    "and a few concrete examples. Which aspect would you like me to focus on next?",
]


# ---------------------------------------------------------------- blocks
def _topic(question: str, words: int = 8) -> str:
    """The first words of the question, as a short topic phrase; "your request" when they hold a phrase
    a refusal detector could take for a refusal (a jailbreak prompt's "As an AI, I cannot ...")."""
    # no "?" inside: the follow-up must stay the response's only question
    head = " ".join(question.replace("\n", " ").replace("?", "").split()[:words]).rstrip(".!,:;")
    if not head or _REFUSAL_LIKE.search(head):
        return "your request"
    return f'"{head}"'


def _readings(ground_truth: str) -> list[str]:
    """The 'Meaning i: …?' questions of an ambig_qa multipleQAs ground truth."""
    out = []
    for part in ground_truth.split("Meaning ")[1:]:
        text = part.split(":", 1)[-1].split("; Answer", 1)[0].strip().rstrip("?").strip()
        if text and "?" not in text and len(text.split()) <= 18:
            out.append(text[0].lower() + text[1:])
    return out


def response_for(record: GTAlignRecord, kind: str, rng: random.Random) -> str:
    """The <response> text implementing the planned strategy for this record."""
    if kind == "math":
        return rng.choice(MATH_RESPONSE) % record.ground_truth.strip()
    if kind == "single":
        answer = record.ground_truth.split("###", 1)[-1].strip()
        return rng.choice(SINGLE_RESPONSE) % answer
    if kind == "ambiguous":
        readings = _readings(record.ground_truth)
        if len(readings) >= 2 and rng.random() < 0.7:
            a, b = rng.sample(readings, 2)
            return rng.choice(CLARIFY_READINGS) % (a, b)
        return rng.choice(CLARIFY_GENERIC)
    if kind == "harmful":
        return rng.choice(REFUSAL)
    return rng.choice(BENIGN_RESPONSE) % _topic(record.question)


def analyze_for(matrix: PayoffMatrix, key: str, rng: random.Random) -> str:
    front = matrix.pareto_frontier()
    welfare = round(sum(matrix.cells[key]), 1)
    opener = rng.choice(["Pareto frontier:", "Non-dominated points:", "The Pareto frontier is"])
    rest = rng.choice(["the other points are dominated.", "the remaining points are dominated."])
    pick = rng.choice(["Its LLM+user", "Its welfare"])
    return f"{opener} {', '.join(front)}; {rest} {pick} ({welfare}) is the highest, so I choose {key}."


def demonstration(record: GTAlignRecord, rng: random.Random) -> str:
    """One well-formed four-block output for `record` (the rules of the module docstring)."""
    p = plan(record)
    matrix = payoff_for(p.key, rng)
    if matrix.recommend() != p.key:  # payoff_for guarantees it; keep the invariant loud
        raise AssertionError(f"payoff recommends {matrix.recommend()}, plan is {p.key}")
    thinking = f"{rng.choice(THINKING[p.kind])} {rng.choice(STRATEGY_NOTE[p.key])}"
    return (
        f"<thinking>{thinking}</thinking>"
        f"<payoff>{payoff_json(matrix)}</payoff>"
        f"<analyze>{analyze_for(matrix, p.key, rng)}</analyze>"
        f"<response>{response_for(record, p.kind, rng)}</response>"
    )


def demonstrations(
    records: Sequence[GTAlignRecord], seed: int = 0, *, with_system: bool = False
) -> list[tuple[list[dict[str, str]], str]]:
    """(chat messages, target text) per record. The messages are the user turn alone, as the rollout
    sends it (the game's observation); `with_system` keeps the record's system message too. Each record
    gets its own generator seeded from (seed, position in `records`). Records without a rule (`usable`
    is False: a math row with no ground truth) are skipped."""
    out = []
    for i, record in enumerate(records):
        if not usable(record):
            continue
        rng = random.Random(f"{seed}:{i}")
        if with_system:
            messages = [dict(m) for m in record.messages]
        else:
            messages = [{"role": "user", "content": record.user_prompt}]
        out.append((messages, demonstration(record, rng)))
    return out
