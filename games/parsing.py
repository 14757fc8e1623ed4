"""Parsers for the answer formats the policies emit.

- GRL: `<think>…</think><answer>a1 || a2</answer>` (spec §6.1).
- Hidden chain of thought (Self-RedTeam, spec §5.2): strict `<think>…</think> <answer>…</answer>` check and
  the visible part that the other role may see.
- GTAlign's four blocks `<thinking><payoff><analyze><response>` and the strict payoff JSON (spec §1.2, §1.4).

Parsers never raise on model text; they return a result whose `ok` flag says whether the format held.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field

SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>", "<s>")
# The chat-control markers alone: they stand for special-token ids left in by a decode that kept them.
CONTROL_TOKENS = tuple(t for t in SPECIAL_TOKENS if t.startswith("<|"))
ACTION_SEPARATOR = "||"

_THINK_ANSWER = re.compile(r"<think>(.*?)</think>\s*<answer>(.*?)</answer>", re.DOTALL)
_ANSWER_ONLY = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def strip_special_tokens(text: str) -> str:
    for tok in SPECIAL_TOKENS:
        text = text.replace(tok, "")
    return text


def drop_control_tokens(text: str) -> str:
    """Remove the `<|…|>` chat-control markers; everything else, `<s>` and `</s>` included, stays."""
    for tok in CONTROL_TOKENS:
        text = text.replace(tok, "")
    return text


@dataclass(frozen=True)
class ThinkAnswer:
    """A parsed GRL turn. `clean` is the rebuilt message stored in the history (not the raw text)."""

    ok: bool
    think: str = ""
    answer: str = ""
    actions: tuple[str, ...] = field(default_factory=tuple)
    clean: str = ""


def parse_think_answer(
    text: str, *, think: bool = True, max_actions: int | None = None, separator: str = ACTION_SEPARATOR
) -> ThinkAnswer:
    """Parse a GRL response into actions; no match means no actions (ok=False).

    Generation is usually pre-filled with "<think>", so a response that has "</think>" but no opening
    tag gets the tag put back before matching.
    """
    text = strip_special_tokens(text)
    if think:
        if "<think>" not in text and "</think>" in text:
            text = "<think>" + text
        m = _THINK_ANSWER.search(text)
        if m is None:
            return ThinkAnswer(ok=False, clean=text)
        thought, answer = m.group(1).strip(), m.group(2).strip()
    else:
        m = _ANSWER_ONLY.search(text)
        if m is None:
            return ThinkAnswer(ok=False, clean=text)
        thought, answer = "", m.group(1).strip()
    actions = split_actions(answer, separator=separator, max_actions=max_actions)
    joined = separator.join(actions)
    clean = f"<think>{thought}</think><answer>{joined}</answer>" if think else f"<answer>{joined}</answer>"
    return ThinkAnswer(ok=True, think=thought, answer=answer, actions=actions, clean=clean)


def split_actions(
    answer: str, *, separator: str = ACTION_SEPARATOR, max_actions: int | None = None
) -> tuple[str, ...]:
    actions = [a.strip() for a in answer.split(separator) if a.strip()]
    if max_actions is not None:
        actions = actions[:max_actions]
    return tuple(actions)


# ---- hidden chain of thought ----------------------------------------------------------------


@dataclass(frozen=True)
class HiddenCoT:
    """`ok` iff exactly one </think>, one <answer> and one </answer>, in that order (spec §5.2)."""

    ok: bool
    think: str
    answer: str  # what the other role / the judge may see


def parse_hidden_cot(text: str) -> HiddenCoT:
    text = strip_special_tokens(text)
    ok = (
        text.count("</think>") == 1
        and text.count("<answer>") == 1
        and text.count("</answer>") == 1
        and text.index("</think>") < text.index("<answer>") < text.index("</answer>")
    )
    if ok:
        think = text[: text.index("</think>")].replace("<think>", "").strip()
        answer = text[text.index("<answer>") + len("<answer>") : text.index("</answer>")].strip()
        return HiddenCoT(True, think, answer)
    return HiddenCoT(False, "", visible_part(text))


def visible_part(text: str) -> str:
    """Best-effort public part of a malformed response: drop every reasoning span and all tags.

    Anything before the last "</think>" is reasoning, and so is an unclosed "<think>" tail.
    """
    if "</think>" in text:
        text = text[text.rindex("</think>") + len("</think>") :]
    if "<think>" in text:
        text = text[: text.index("<think>")]
    text = re.sub(r"</?answer>", "", text)
    return text.strip()


# ---- GTAlign four blocks --------------------------------------------------------------------

PAYOFF_KEYS = ("DQ_AQ", "DQ_CQ", "DQ_DA", "VQ_AQ", "VQ_CQ", "VQ_DA")
PAYOFF_SUBKEYS = ("LLM", "user")

# The spec's format regex, with its flags: MULTILINE lets "$" match before a later line, so trailing
# text after </response> on a new line still passes (a quirk we keep for fidelity).
_FOUR_BLOCKS = re.compile(
    r"^<thinking>.*?</thinking>\s*<payoff>.*?</payoff>\s*<analyze>.*?</analyze>\s*<response>.*?</response>$",
    re.DOTALL | re.MULTILINE,
)
_CURLY = {"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"}


def _block(text: str, tag: str) -> str | None:
    m = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
    return m.group(1).strip() if m else None


def parse_payoff_json(block: str) -> dict[str, tuple[float, float]] | None:
    """Strict payoff block: exactly six keys, each {"LLM": number, "user": number}. Returns
    {key: (llm, user)} or None. JSON first; otherwise straighten curly quotes and try a Python literal.
    Never raises on model text: a cell too large for a float or a block nested too deep gives None."""
    return _parse_payoff(block)[0]


def _parse_payoff(block: str) -> tuple[dict[str, tuple[float, float]] | None, str]:
    """(cells, "") or (None, why not)."""
    try:
        return _payoff_cells(_load_payoff(block)), ""
    except _NotStrict:
        return None, "payoff block is not the strict six-key JSON"
    except OverflowError:
        return None, "a payoff cell does not fit a float"
    except RecursionError:
        return None, "payoff block is nested too deep"


class _NotStrict(ValueError):
    pass


def _load_payoff(block: str) -> object:
    try:
        return json.loads(block)
    except (ValueError, TypeError):
        pass
    fixed = block
    for k, v in _CURLY.items():
        fixed = fixed.replace(k, v)
    try:
        return json.loads(json.dumps(ast.literal_eval(fixed)))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise _NotStrict from None


def _payoff_cells(data: object) -> dict[str, tuple[float, float]]:
    if not isinstance(data, dict) or set(data) != set(PAYOFF_KEYS):
        raise _NotStrict
    out: dict[str, tuple[float, float]] = {}
    for key in PAYOFF_KEYS:
        cell = data[key]
        if not isinstance(cell, dict) or set(cell) != set(PAYOFF_SUBKEYS):
            raise _NotStrict
        vals = [cell[s] for s in PAYOFF_SUBKEYS]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in vals):
            raise _NotStrict
        out[key] = (float(vals[0]), float(vals[1]))
    return out


@dataclass(frozen=True)
class FourBlocks:
    """A parsed GTAlign output.

    ok: the sample can be scored at all (response and payoff blocks extracted, payoff parses).
    fmt: the spec's format_reward (1 iff the whole text matches the four-block regex and payoff parses).
    reasoning: everything before "<response>" (tags included); used for the reasoning-length penalty.
    """

    ok: bool
    fmt: int
    thinking: str = ""
    payoff: dict[str, tuple[float, float]] | None = None
    analyze: str = ""
    response: str = ""
    reasoning: str = ""
    error: str = ""


def parse_four_blocks(text: str) -> FourBlocks:
    """The four blocks of a GTAlign output, scored as decoded: only the `<|…|>` control markers are
    dropped (a literal `<s>` is text). Never raises on model text."""
    text = drop_control_tokens(text)
    response = _block(text, "response")
    payoff_text = _block(text, "payoff")
    if response is None or payoff_text is None:
        return FourBlocks(ok=False, fmt=0, error="missing <response> or <payoff> block")
    payoff, why = _parse_payoff(payoff_text)
    if payoff is None:
        return FourBlocks(ok=False, fmt=0, error=why)
    fmt = int(_FOUR_BLOCKS.match(text) is not None)
    return FourBlocks(
        ok=True,
        fmt=fmt,
        thinking=_block(text, "thinking") or "",
        payoff=payoff,
        analyze=_block(text, "analyze") or "",
        response=response,
        reasoning=text.split("<response>")[0],
    )
