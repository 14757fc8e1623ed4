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
  - {env: gtalign, data_path: data/gtalign/math-hard.test.parquet, weight: 2}
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


def _numeric_fields(model=JobSpec, prefix=""):
    """(dotted path, type) of every int / float field of JobSpec and its sections, found by reflection."""
    import typing

    from pydantic import BaseModel

    for name, info in model.model_fields.items():
        args = typing.get_args(info.annotation) or (info.annotation,)
        sub = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is not None:
            yield from _numeric_fields(sub, f"{prefix}{name}.")
        elif int in args or float in args:
            yield f"{prefix}{name}", float if float in args else int


def _with(loc: str, value) -> dict:
    out: dict = {}
    *parents, leaf = loc.split(".")
    node = out
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    if loc.startswith("tasks."):
        return {"tasks": [{"env": "sokoban", leaf: value}]}
    return out


NUMERIC = sorted(_numeric_fields())


def test_every_number_is_found_by_reflection():
    locs = {loc for loc, _ in NUMERIC}
    assert {"seed", "learner.steps", "rollout.group_size", "rollout.cpus_per_replica"} <= locs
    assert "rollout.response_lengths.median_tokens" in locs and len(locs) > 40


@pytest.mark.parametrize("loc,kind", NUMERIC, ids=[n for n, _ in NUMERIC])
def test_every_number_is_finite_and_bounded(loc, kind):
    from pydantic import ValidationError

    want = "tasks.0." + loc.split(".", 1)[1] if loc.startswith("tasks.") else loc
    for huge in (10**30, 2**63):  # over every bound, in JSON
        with pytest.raises(JobSpecError) as err:
            JobSpec.from_text(json.dumps(_with(loc, huge)))
        assert [e["loc"] for e in err.value.errors] == [want], err.value.errors
    if kind is float:  # non-finite, from Python (JSON cannot carry them; YAML's are refused when parsed)
        for bad in (float("inf"), float("-inf"), float("nan")):
            with pytest.raises(ValidationError) as verr:
                JobSpec.model_validate(_with(loc, bad))
            assert ".".join(map(str, verr.value.errors()[0]["loc"])) == want


def test_non_finite_numbers_are_refused_in_text_and_in_python():
    for text in (
        "learner: {learning_rate: .inf}",
        '{"learner": {"learning_rate": NaN}}',
        '{"hyper": {"beta": -1e999}}',
    ):
        with pytest.raises(JobSpecError) as err:
            JobSpec.from_text(text)
        assert "finite" in err.value.errors[0]["msg"], err.value.errors
    with pytest.raises(ValueError, match="finite"):
        JobSpec(learner={"learning_rate": float("inf")})
    with pytest.raises(ValueError, match="finite"):  # free-form options too
        JobSpec(tasks=[{"env": "sokoban", "options": {"x": float("nan")}}])


BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b]\n"
)


@pytest.mark.parametrize(
    "text, loc, words",
    [
        (BOMB, "a", "anchors"),
        ("x: *nowhere", "x", "aliases"),
        ("name: !!python/name:os.system", "name", "tag"),
        ("seed: !!binary AAAA", "seed", "tag"),
        ("name: a\n---\nname: b", "", "one YAML document"),
        ("learner: {steps: 1, steps: 2}", "learner", "appears twice"),
        ('{"seed": 1, "seed": 2}', "", "appears twice"),
        ("[" * 100 + "]" * 100, ".".join(["0"] * 32), "deeper than 32"),
        (
            "x:\n" + "".join("  " * i + "- \n" for i in range(1, 40)),
            "x." + ".".join(["0"] * 31),
            "deeper than 32",
        ),
        ("? [a]\n: 1", "", "mapping keys must be plain values"),
        ("name: " + "n" * 9000, "name", "longer than 8192"),
        ('{"seed": ' + "1" * 5000 + "}", "", "not a valid document"),
        ("seed: " + "1" * 5000, "", "not a valid document"),
        ('{"model": {"path": "\\ud800"}}', "model.path", "unpaired surrogate"),
        ('model: {path: "a\\0b"}', "model.path", "control characters"),
        ("judge: {api_key_env: 'HOME; rm -rf'}", "judge.api_key_env", "should match pattern"),
    ],
)
def test_documents_are_parsed_within_limits(text, loc, words):
    with pytest.raises(JobSpecError) as err:
        JobSpec.from_text(text)
    assert any(e["loc"] == loc and words in e["msg"] for e in err.value.errors), err.value.errors


def test_size_limit_is_its_own_error():
    from services.limits import DocLimits

    with pytest.raises(JobSpecError) as err:
        JobSpec.from_text("name: x\n" + "#" * 2000, DocLimits(max_bytes=1024))
    assert err.value.too_large and "limit is 1024" in err.value.errors[0]["msg"]
    assert JobSpec.from_text("name: x\n" + "#" * 1000, DocLimits(max_bytes=1024)).name == "x"  # 1,008 bytes
