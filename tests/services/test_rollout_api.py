"""The rollout contract's pure parts: chat request bounds and refused fields, stop strings, the OpenAI chunk
form of a completion, typed results' counts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.rollout_api import (
    ChatChoice,
    ChatCompletion,
    ChatMessage,
    ChatRequest,
    ChatUsage,
    EpisodeResult,
    TrajectorySummary,
    WindowStepResult,
    cut_at_stop,
)

MSG = [{"role": "user", "content": "hi"}]


def test_chat_request_bounds():
    for bad in (
        {"seed": 2**70},
        {"seed": -1},
        {"temperature": float("inf")},
        {"n": 17},
        {"messages": []},
        {"stop": ["a"] * 5},
        {"stop": [""]},
        {"messages": [{"role": "user", "content": "x" * 300_000}]},
    ):
        with pytest.raises(ValidationError):
            ChatRequest.model_validate({"messages": MSG} | bad)
    assert ChatRequest(messages=MSG, stop="END").stops() == ["END"]


def test_unsupported_fields_are_named_not_ignored():
    req = ChatRequest.model_validate({"messages": MSG, "tools": [], "logit_bias": {}, "user": "u1"})
    assert req.unsupported() == ["logit_bias", "tools"]
    assert ChatRequest(messages=MSG).unsupported() == []


def test_cut_at_stop_takes_the_earliest():
    assert cut_at_stop("one two three", ["three", "two"]) == ("one ", True)
    assert cut_at_stop("one", ["x"]) == ("one", False)
    assert cut_at_stop("", []) == ("", False)


def test_completion_chunks_follow_openai():
    out = ChatCompletion(
        id="c1",
        created=1,
        model="job",
        choices=[
            ChatChoice(index=0, finish_reason="stop", message=ChatMessage(role="assistant", content="ok"))
        ],
        usage=ChatUsage(prompt_tokens=3, completion_tokens=1, total_tokens=4),
        policy_versions=[[2]],
    )
    chunks = out.chunks(include_usage=True)
    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * 4
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[1]["choices"][0]["delta"] == {"content": "ok"}
    assert chunks[2]["choices"][0]["finish_reason"] == "stop" and chunks[3]["usage"]["total_tokens"] == 4
    assert "logprobs" not in out.to_openai()["choices"][0]


def test_results_count_the_same_way():
    t = TrajectorySummary(id="a", role="policy", tokens=9, generated=5, reward=0.5, versions=[1])
    ep = EpisodeResult(episodes=[], trajectories=[t, t], busy_s=1.0, replica="r")
    assert (ep.counts().trajectories, ep.counts().finished, ep.counts().tokens) == (2, 2, 10)
    ws = WindowStepResult(
        segments=4, finished=1, tokens=16, rewards=[1.0], enqueued=4, busy_s=0.1, replica="r", version=3
    )
    assert ws.counts().rewards == [1.0] and ws.kind == "window_step"
