"""Judge test fixtures: GTAlign outputs, a real OpenAI-compatible server over the tiny model, configs."""

from __future__ import annotations

import json

import pytest

from judge.config import JudgeConfig

PAYOFF = {
    "DQ_AQ": (4.1, 3.5),
    "DQ_CQ": (3.6, 2.0),
    "DQ_DA": (2.8, 4.1),
    "VQ_AQ": (3.0, 2.8),
    "VQ_CQ": (1.0, 1.3),
    "VQ_DA": (1.0, 1.0),
}


def four_blocks(
    response: str, analyze: str = "1+1=2 is correct", thinking: str = "1+1=2", pad: int = 46
) -> str:
    """A GTAlign output with the §1.4 sample payoff matrix. With the defaults it is the worked example:
    498 characters before <response>, 46 words in all for a one-word response."""
    payoff = json.dumps({k: {"LLM": v[0], "user": v[1]} for k, v in PAYOFF.items()}, indent=4)
    payoff = "{" + " " * pad + payoff[1:]  # whitespace only: lengthens the reasoning, adds no words
    return (
        f"<thinking>{thinking}</thinking><payoff>{payoff}</payoff><analyze>{analyze}</analyze>"
        f"<response>{response}</response>"
    )


WORKED_EXAMPLE = four_blocks("1+1=\\boxed{2}")


@pytest.fixture
def rules_config() -> JudgeConfig:
    return JudgeConfig(backend="rules", job="test")


@pytest.fixture(scope="session")
def model_server(tiny_model_path):
    """The tiny Qwen3 behind our OpenAI-compatible server, replies with a <think> block in content."""
    from tests.judge.openai_server import ServerThread, create_app

    with ServerThread(create_app(tiny_model_path)) as server:
        yield server


@pytest.fixture(scope="session")
def parser_server(tiny_model_path):
    """The same model, but reasoning returned separately (SGLang's --reasoning-parser qwen3)."""
    from tests.judge.openai_server import ServerThread, create_app

    with ServerThread(create_app(tiny_model_path, reasoning_parser=True)) as server:
        yield server
