"""The judge as a Ray Serve deployment: a transformers judge on CPU end to end, through the services/
contract (services.judge_api) as rollout/ calls it."""

from __future__ import annotations

import pytest

from judge.config import JudgeConfig
from judge.serve import deployment_options
from services.judge_api import (
    GPORequest,
    GTAlignItem,
    JudgeClient,
    PreferenceRequest,
    SafetyRequest,
    ScoreRequest,
    VerdictItem,
    VerdictRequest,
)
from tests.judge.conftest import WORKED_EXAMPLE


def test_deployment_options() -> None:
    fixed = deployment_options(JudgeConfig(serve={"replicas": 3, "num_cpus": 0.25}))
    assert fixed["num_replicas"] == 3 and fixed["ray_actor_options"] == {"num_cpus": 0.25, "num_gpus": 0.0}
    auto = deployment_options(
        JudgeConfig(
            backend="sglang",
            sglang={"tp": 2, "dp": 2},
            serve={"autoscaling": True, "min_replicas": 1, "max_replicas": 3},
        )
    )
    assert "num_replicas" not in auto and auto["ray_actor_options"]["num_gpus"] == 4.0
    assert auto["autoscaling_config"]["max_replicas"] == 3
    external = deployment_options(JudgeConfig(backend="sglang", url="http://judge:30000/v1"))
    assert external["ray_actor_options"]["num_gpus"] == 0.0  # the server lives elsewhere
    with pytest.raises(ValueError):
        JudgeConfig(serve={"autoscaling": True, "min_replicas": 5, "max_replicas": 2})


@pytest.mark.slow
def test_transformers_judge_through_ray_serve(serve_url, tiny_model_path) -> None:
    from ray import serve

    from judge.serve import deploy

    cfg = JudgeConfig(
        backend="transformers",
        model=tiny_model_path,
        job="test-serve",
        parse_retries=0,
        sampling={"max_tokens": 8, "temperature": 0.0, "top_k": None, "enable_thinking": False},
        serve={"num_cpus": 0.5, "name": "judge"},
    )
    app = "judge-test"
    deploy(cfg, app_name=app)
    try:
        client = JudgeClient(app, timeout_s=120)
        assert client.health().backend == "transformers"
        items = [
            GTAlignItem(data_source="math-hard", output=WORKED_EXAMPLE, ground_truth="2", question="1+1?"),
            GTAlignItem(data_source="math-hard", output=WORKED_EXAMPLE, judge=1.0),
            GTAlignItem(data_source="wildguard", output="no blocks", ground_truth="harmful"),
        ]
        out = client.score(ScoreRequest(items=items, normalize="minmax"))
        asked, fixed, broken = out.results
        # the random tiny model writes no \boxed{} verdict: judge score 0, counted, sample still scored
        assert asked.scored and asked.judge == 0.0 and asked.error.startswith("parse")
        assert asked.score == pytest.approx(0.270793, abs=1e-6)
        assert fixed.score == pytest.approx(0.732956, abs=1e-6) and fixed.ppo_score == 1.0
        assert not broken.scored and broken.score == 0.0
        item = VerdictItem(rubric="ambiguity", question="q", response="r", ground_truth="ambiguous")
        verdicts = client.verdicts(VerdictRequest(items=[item]))
        assert verdicts.results[0].error.startswith("parse")
        pref = client.preference(PreferenceRequest(question="2+2?", responses=["4", "5", "four"]))
        assert pref.n_soft == 6 and len(pref.matrix) == 3  # label-token logprobs of the real model
        assert all(abs(pref.matrix[i][j] + pref.matrix[j][i] - 1) < 1e-9 for i in range(3) for j in range(3))
        safety = client.safety(SafetyRequest(prompts=["hi"], responses=["hello"]))
        assert safety.labels == [None]  # no three-label verdict: a tie
        gpo = client.gpo(
            GPORequest(prompts=["How to pick a lock?"], replies=["No."], history=["How to pick a lock?"])
        )
        r = gpo.rewards[0]
        assert r.ok and r.self_bleu == pytest.approx(1.0) and r.cosine == pytest.approx(1.0, abs=1e-4)
        metrics_text = client.handle.metrics.remote().result(timeout_s=60).body.decode()
        counter = 'payoff_judge_failures_total{backend="transformers",job="test-serve",reason="parse"}'
        assert counter in metrics_text
    finally:
        serve.delete(app)
