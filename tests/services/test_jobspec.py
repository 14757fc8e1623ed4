import json

import pytest

from services.jobspec import JobSpec, JobSpecError


def test_defaults_are_the_embedded_laptop_job():
    spec = JobSpec()
    assert spec.model.path == "tiny-qwen3"
    assert spec.judge.backend == "rules"
    assert spec.rollout.gpus_per_replica == 0 and spec.learner.gpus_per_worker == 0
    assert spec.asynchrony.window_tokens <= spec.rollout.max_response_tokens


def test_yaml_and_json_give_the_same_spec():
    yaml_text = """
name: gtalign-math
algorithm: grpo
model: {path: smollm2-135m}
tasks:
  - {env: gtalign, data_path: ../shared/data/gtalign/math-hard.test.parquet, weight: 2}
  - {env: sokoban, max_turns: 5}
rollout: {group_size: 8, max_response_tokens: 512}
asynchrony: {window_tokens: 128, max_staleness: 2}
"""
    a = JobSpec.from_text(yaml_text)
    b = JobSpec.from_text(json.dumps(a.model_dump()))
    assert a == b
    assert a.tasks[0].weight == 2 and a.tasks[1].max_turns == 5
    assert a.asynchrony.max_staleness == 2


@pytest.mark.parametrize(
    "text, loc, words",
    [
        ("algorithm: ppo2", "algorithm", "Input should be"),
        ("rollout: {windw: 3}", "rollout.windw", "unknown field"),
        (
            "asynchrony: {window_tokens: 999}",
            "",
            "window_tokens (999) is larger than rollout.max_response_tokens",
        ),
        ("algorithm: grpo\nrollout: {group_size: 1}", "", "group_size must be at least 2"),
        ("learner: {batch_size: 4, mini_batch_size: 8}", "learner", "mini_batch_size (8) is larger"),
        ("judge: {backend: openai}", "judge", "needs judge.url"),
        ("tasks: []", "tasks", "at least 1"),
        ("name: 'bad name!'", "name", "String should match"),
        ("algorithm: gpo", "", "two-role task"),
        ("- just a list", "", "must be a mapping"),
        ("{unclosed: [", "", "not valid YAML/JSON"),
    ],
)
def test_bad_specs_name_the_field_and_say_why(text, loc, words):
    with pytest.raises(JobSpecError) as err:
        JobSpec.from_text(text)
    e = err.value
    assert any(x["loc"] == loc and words in x["msg"] for x in e.errors), e.errors
    assert words in str(e)


def test_two_role_algorithm_with_redteam_task_is_valid():
    spec = JobSpec.from_text("algorithm: self_redteam\ntasks: [{env: redteam}]")
    assert spec.algorithm == "self_redteam"


def test_judge_backends_get_default_models():
    assert JobSpec.from_text("judge: {backend: sglang}").judge.model == "Qwen/Qwen3-32B"
    assert JobSpec.from_text("judge: {backend: transformers}").judge.model == "tiny-qwen3"


def test_job_environments_are_exactly_the_game_registry():
    from typing import get_args

    from games.registry import ENVS
    from services.jobspec import Environment

    assert set(get_args(Environment)) == set(ENVS)
