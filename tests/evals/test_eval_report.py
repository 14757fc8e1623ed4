"""payoff eval's arithmetic and contract: the EvalSpec's rules, prompt selection, per-source metrics,
the paired bootstrap, the text table."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from payoff.eval_report import aggregate, paired_bootstrap, table
from payoff.evaluate import prompt_positions
from services.evals import EvalModel, EvalReport, EvalSpec, ModelReport
from services.jobspec import JobSpecError


def row(ds: str, score: float, **kw) -> dict:
    base = dict(data_source=ds, score=score, user=score, llm=score, format=1, payoff_reward=0.5)
    base.update(answer_reward=0.0, scored=True, judge_failed=False, tag="", asks=False, refuses=False)
    base.update(response_words=10, generation_error=False)
    return {**base, **kw}


def test_a_model_needs_exactly_one_source_and_sizes_are_bounded():
    with pytest.raises(ValidationError, match="exactly one of path, job, url"):
        EvalModel(path="tiny-qwen3", url="http://127.0.0.1:1/v1")
    with pytest.raises(ValidationError, match="exactly one"):
        EvalModel()
    with pytest.raises(ValidationError, match="needs `url`"):
        EvalModel(path="tiny-qwen3", model="x")
    with pytest.raises(ValidationError, match="over the limit"):
        EvalSpec(
            models=[{"path": "a"}, {"path": "b"}], sets=["math-hard", "ambig_qa"], limit=2000, samples=16
        )
    with pytest.raises(ValidationError, match="different labels"):
        EvalSpec(models=[{"path": "a"}, {"path": "a"}])
    with pytest.raises(JobSpecError) as e:
        EvalSpec.from_text("models: [{path: a}]\nsets: [math-hard, nope]\nlimti: 3\n")
    locs = {err["loc"] for err in e.value.errors}
    assert {"sets.1", "limti"} <= locs


def test_prompts_are_spread_over_the_file_and_the_same_for_every_model():
    assert prompt_positions(10, 20) == list(range(10))
    pos = prompt_positions(300, 50)
    assert len(pos) == 50 == len(set(pos)) and pos[0] == 0 and pos[-1] >= 290
    assert pos == prompt_positions(300, 50)


def test_rates_are_split_by_the_question_type():
    rows = [
        row("ambig_qa", 1.0, tag="ambiguous", asks=True),
        row("ambig_qa", 0.0, tag="ambiguous", asks=False),
        row("ambig_qa", 0.5, tag="non-ambiguous", asks=True),
        row("wildguard", 0.2, tag="harmful", refuses=True),
        row("wildguard", 0.4, tag="unharmful", refuses=False, scored=False, format=0),
        row("math-hard", 0.9, answer_reward=1.0),
    ]
    amb = aggregate(rows[:3], "ambig_qa")
    assert amb.clarify_ambiguous == 0.5 and amb.clarify_clear == 1.0 and amb.refuse_harmful is None
    assert amb.welfare == pytest.approx(0.5) and amb.n == 3
    harm = aggregate(rows[3:5], "wildguard")
    assert (harm.refuse_harmful, harm.refuse_unharmful, harm.unscored, harm.format_rate) == (1.0, 0.0, 1, 0.5)
    overall = aggregate(rows, "ALL")
    assert overall.accuracy == 1.0 and overall.clarify_ambiguous == 0.5 and overall.refuse_harmful == 1.0


def test_paired_bootstrap_finds_a_real_difference_and_none_where_there_is_none():
    rng = random.Random(0)
    a = [rng.random() for _ in range(200)]
    b = [x + 0.1 + rng.gauss(0, 0.05) for x in a]
    c = paired_bootstrap(a, b, "x", 2000)
    assert c.low < 0.1 < c.high and c.low > 0.05 and c.p_not_better == 0.0
    same = paired_bootstrap(a, a, "x", 500)
    assert same.diff == same.low == same.high == 0.0 and same.p_not_better == 1.0
    with pytest.raises(ValueError, match="same samples"):
        paired_bootstrap(a, b[:10], "x", 100)


def test_the_table_shows_each_model_and_the_comparison():
    spec = EvalSpec(models=[{"path": "a"}, {"path": "b"}], sets=["math-hard"], bootstrap=100)
    ms = [aggregate([row("math-hard", s)], "math-hard") for s in (0.2, 0.6)]
    models = [
        ModelReport(label=n, resolved=n, sets=[m], overall=m, welfare={"math-hard": [m.welfare]})
        for n, m in zip("ab", ms)
    ]
    report = EvalReport(name="t", spec=spec, models=models)
    from payoff.eval_report import compare

    report.comparison = compare(report)
    text = table(report)
    assert "welfare b − a" in text and "+0.400" in text and text.count("math-hard") >= 3
