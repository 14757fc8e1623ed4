"""The replica's OpenAI chat pieces: what a chat request may ask of the engine (template, unsupported
fields, the model's context), and how an engine output becomes a choice (`stop` strings, logprobs).

Invariant: a request the engine cannot serve is refused with a 400 before anything is generated — never a
replica busy for minutes or killed by an oversized prompt.
"""

from __future__ import annotations

from fastapi import HTTPException

from rollout.engine import Engine, GenOutput
from services.rollout_api import (
    ChatChoice,
    ChatMessage,
    ChatRequest,
    ChoiceLogprobs,
    TokenLogprob,
    cut_at_stop,
)


def chat_prompt(engine: Engine, req: ChatRequest) -> tuple[list[int], int]:
    """The prompt's token ids and the completion budget; 400 for what this endpoint cannot do."""
    if req.stream:
        raise HTTPException(400, "stream=true is served by the gateway, not by a replica")
    if req.unsupported():
        raise HTTPException(400, f"not supported by this endpoint: {', '.join(req.unsupported())}")
    try:
        prompt = engine.chat_prompt_ids([m.model_dump() for m in req.messages])
    except Exception as e:
        raise HTTPException(400, f"cannot apply the chat template: {e}") from None
    max_tokens = req.max_completion_tokens or req.max_tokens or 256
    room = engine.max_context - len(prompt)
    if room < 1:
        raise HTTPException(
            400, f"the prompt has {len(prompt)} tokens; this model's context is {engine.max_context}"
        )
    if req.max_tokens is None and req.max_completion_tokens is None:
        max_tokens = min(max_tokens, room)  # the default budget shrinks to fit
    if max_tokens > room:
        raise HTTPException(
            400,
            f"the prompt ({len(prompt)} tokens) plus max_tokens ({max_tokens}) exceeds this model's "
            f"context of {engine.max_context} tokens",
        )
    return prompt, max_tokens


def choice(tok, i: int, o: GenOutput, req: ChatRequest) -> ChatChoice:
    """One OpenAI choice from an engine output: the decoded text cut at the first stop string (with the
    tokens and logprobs that make it up), the finish reason, logprobs when asked for."""
    ids, lps, finish = o.token_ids, o.logprobs, o.finish_reason if o.finish_reason != "abort" else "stop"
    text = tok.decode(ids, skip_special_tokens=True)
    text, stopped = cut_at_stop(text, req.stops())
    if stopped:  # keep the tokens that make up the text before the stop string
        lo, hi = 0, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (
                (mid + 1, hi)
                if len(tok.decode(ids[:mid], skip_special_tokens=True)) < len(text)
                else (lo, mid)
            )
        ids, lps, finish = ids[:lo], lps[:lo], "stop"
    logprobs = None
    if req.logprobs:
        content = [TokenLogprob(token=tok.decode([t]), logprob=lp) for t, lp in zip(ids, lps)]
        logprobs = ChoiceLogprobs(content=content)
    return ChatChoice(
        index=i, finish_reason=finish, message=ChatMessage(role="assistant", content=text), logprobs=logprobs
    )
