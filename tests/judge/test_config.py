"""Judge configuration: per-backend defaults and the mapping from a JobSpec's judge section."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from judge.config import JudgeConfig
from services.jobspec import JobSpec


def test_backend_defaults() -> None:
    sglang = JudgeConfig(backend="sglang")
    assert sglang.model == "Qwen/Qwen3-32B" and sglang.launches_sglang
    s = sglang.sampling  # spec §1.5: Qwen3 thinking-mode sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.enable_thinking) == (32768, 0.6, 0.95, 20, True)
    assert sglang.sglang.reasoning_parser == "qwen3" and sglang.timeout_s == 300.0
    local = JudgeConfig(backend="transformers")
    assert local.model == "tiny-qwen3" and local.sampling.temperature == 0.0 and local.sampling.top_k is None
    hosted = JudgeConfig(backend="openai", url="https://example.invalid/v1")
    assert hosted.sampling.top_k is None and hosted.sampling.enable_thinking is None  # plain OpenAI schema
    assert not JudgeConfig(backend="sglang", url="http://judge:30000/v1").launches_sglang
    with pytest.raises(ValidationError):
        JudgeConfig(backend="openai")  # no url
    with pytest.raises(ValidationError):
        JudgeConfig(backend="rules", tempreature=0.1)  # typo: unknown field


def test_from_jobspec() -> None:
    spec = JobSpec.model_validate(
        {
            "judge": {
                "backend": "sglang",
                "replicas": 2,
                "gpus_per_replica": 4,
                "timeout_s": 120,
                "max_retries": 5,
                "welfare": "user",
            }
        }
    )
    cfg = JudgeConfig.from_spec(spec.judge, job="job-1")
    assert (cfg.backend, cfg.model, cfg.job, cfg.timeout_s, cfg.max_retries) == (
        "sglang",
        "Qwen/Qwen3-32B",
        "job-1",
        120.0,
        5,
    )
    assert cfg.serve.replicas == 2 and cfg.replica_gpus() == 4.0
    default = JudgeConfig.from_spec(JobSpec().judge)
    assert default.backend == "rules" and default.replica_gpus() == 0.0
