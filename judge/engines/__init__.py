"""Judge engines behind one interface (base.JudgeEngine); `make_engine(config)` picks the backend.

Backends import lazily: the rules judge never loads torch, and nothing here imports sglang.
"""

from __future__ import annotations

from judge.config import JudgeConfig
from judge.engines.base import Completion, JudgeEngine, LLMEngine


def make_engine(config: JudgeConfig) -> JudgeEngine:
    if config.backend == "rules":
        from judge.engines.rules import RulesEngine

        return RulesEngine(config)
    if config.backend == "transformers":
        from judge.engines.transformers_engine import TransformersEngine

        return TransformersEngine(config)
    if config.backend == "openai":
        from judge.engines.openai_compat import OpenAICompatEngine

        return OpenAICompatEngine(config)
    if config.backend == "sglang":
        from judge.engines.sglang import SGLangEngine

        return SGLangEngine(config)
    raise ValueError(f"unknown judge backend {config.backend!r}")


__all__ = ["Completion", "JudgeEngine", "LLMEngine", "make_engine"]
