"""Every example job spec validates, covers a seed system, and fits a 2-core laptop as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.validation import semantic_errors
from services.jobs import job_demand
from services.jobspec import JobSpec
from services.models import WARM_STARTS
from services.warmstart import is_built

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
SEED_SYSTEMS = {  # file → (algorithm, env, data) it must show
    "gtalign-math": ("ppo", "gtalign", "math-hard"),
    "gtalign-ambig": ("ppo", "gtalign", "ambig_qa"),
    "gtalign-wildguard": ("ppo", "gtalign", "wildguard"),
    "gtalign-laptop": ("tppo", "gtalign", "math-hard"),  # + ambig_qa, wildguard; per-source zscore
    "grl-sokoban": ("ppo", "sokoban", None),
    "grl-tetris": ("ppo", "tetris", None),
    "comal": ("comal", "math", "math-hard"),
    "redteam-selfplay": ("self_redteam", "redteam", "wildguard"),
    "quickstart": ("tppo", "sokoban", None),
    "demo": ("tppo", "gtalign-strategy", None),
    "demo-tiny": ("tppo", "gtalign-strategy", None),
}
GPU_EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "gpu").glob("*.yaml"))


def test_every_seed_system_has_an_example():
    assert {p.stem for p in EXAMPLES} == set(SEED_SYSTEMS)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_validates(path):
    spec = JobSpec.from_text(path.read_text())
    algorithm, env, data = SEED_SYSTEMS[path.stem]
    assert (spec.algorithm, spec.tasks[0].env, spec.tasks[0].data_path) == (algorithm, env, data)
    assert spec.name == path.stem
    errors = semantic_errors(spec, cluster=None)
    if spec.model.path in WARM_STARTS and not is_built(spec.model.path):
        # a warm start that is not built here (make models builds the tiny one only): a clear error
        assert [e["loc"] for e in errors] == ["model.path"], errors
        assert f"payoff models build {spec.model.path}" in errors[0]["msg"]
    else:
        assert errors == []  # model and data exist here
    assert job_demand(spec).cpus <= 2.0 and job_demand(spec).gpus == 0


@pytest.mark.parametrize("path", GPU_EXAMPLES, ids=[p.stem for p in GPU_EXAMPLES])
def test_gpu_example_validates(path):
    """GPU specs name hub models and GPU resources: they validate as specs (the cluster checks the rest)."""
    spec = JobSpec.from_text(path.read_text())
    assert spec.name == path.stem and spec.rollout.engine == "vllm" and spec.judge.backend == "sglang"
    assert job_demand(spec).gpus >= 1


def test_there_is_a_gpu_example():
    assert GPU_EXAMPLES
