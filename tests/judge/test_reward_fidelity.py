"""Fidelity to GTAlign's reward code: one group of tests per case of the table in judge/README.md.

Where payoff matches the original, the test states the original's rule and checks ours against it; where
payoff keeps a stricter or different rule, the test pins that rule down.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from games.data import VENDORED
from games.gtalign_reward import parse_output, score_output, utilities
from judge import gtalign, metrics
from judge.cli import main
from judge.config import JudgeConfig
from judge.engines import make_engine
from judge.gtalign import GTAlignSample, GTAlignScorer, ambiguity_tag, harm_tag
from judge.normalize import normalize
from tests.judge.conftest import WORKED_EXAMPLE, four_blocks

TOL = 1e-6
U1, L1, W1 = 0.698901, 0.768670, 0.732956  # the worked example, judge 1
L_ABLATION_P0 = 0.704743  # its ablation L with Pareto score 0
HUGE = "1" + "0" * 400  # an integer cell beyond float range


@pytest.fixture
def scorer() -> GTAlignScorer:
    return GTAlignScorer(make_engine(JudgeConfig(backend="rules", job="fidelity")), job="fidelity")


def one(scorer: GTAlignScorer, **kw) -> gtalign.GTAlignResult:
    kw.setdefault("data_source", "math-hard")
    kw.setdefault("output", WORKED_EXAMPLE)
    return scorer.score([GTAlignSample(**kw)])[0]


# ---- literal <s> / </s> are text, not tokens -----------------------------------------------------
def test_literal_strikethrough_counts_in_the_reasoning_length(scorer) -> None:
    text = four_blocks("1+1=\\boxed{2}", thinking="<s>1+1=3</s> 1+1=2")
    reasoning = text.split("<response>")[0]
    assert "<s>1+1=3</s>" in parse_output(text).reasoning
    r = one(scorer, output=text, judge=1.0)
    expected = utilities(
        a_user=1.0,
        a_llm=1.0,
        fmt=1,
        payoff_reward=0.75,
        reasoning_chars=len(reasoning),  # the decoded text as it is: 7 characters of tags included
        response_words=1,
        output_words=len(text.split()),
    )
    assert r.format == 1 and (r.user, r.llm, r.score) == pytest.approx(
        (expected.user, expected.llm, expected.welfare), abs=TOL
    )
    assert r.user < U1  # deleting the tags would have given the worked example's U


def test_literal_tags_in_the_response_reach_the_judge() -> None:
    parsed = parse_output(four_blocks("Use <s>the old</s> the new rule: 1+1=\\boxed{2}"))
    assert parsed.ok and parsed.response == "Use <s>the old</s> the new rule: 1+1=\\boxed{2}"


@pytest.mark.parametrize(
    "text",
    [
        WORKED_EXAMPLE + "</s>",  # after </response> on the same line: the format regex's $ fails
        WORKED_EXAMPLE.replace("</thinking><payoff>", "</thinking><s></s><payoff>"),
    ],
)
def test_literal_tags_between_blocks_fail_the_format_regex(scorer, text) -> None:
    r = one(scorer, output=text, judge=1.0)
    assert r.scored and r.format == 0


def test_payoff_with_literal_tags_does_not_parse(scorer) -> None:
    assert not one(scorer, output=WORKED_EXAMPLE.replace('"DQ_CQ"', '</s>"DQ_CQ"'), judge=1.0).scored


def test_chat_control_markers_are_still_dropped(scorer) -> None:
    r = one(scorer, output="<|im_start|>" + WORKED_EXAMPLE + "<|im_end|><|endoftext|>", judge=1.0)
    assert r.format == 1 and r.score == pytest.approx(W1, abs=TOL)


# ---- a JSON boolean is not a payoff number (payoff stays stricter) -------------------------------
@pytest.mark.parametrize(
    "text",
    [
        WORKED_EXAMPLE.replace('"LLM": 4.1', '"LLM": true'),
        WORKED_EXAMPLE.replace('"', "'").replace("'LLM': 4.1", "'LLM': True"),  # the Python-literal path
    ],
)
def test_boolean_payoff_cell_scores_zero(scorer, text) -> None:
    assert score_output(text, a_user=1.0)[0] is None
    r = one(scorer, output=text, judge=1.0)
    assert not r.scored and r.error.startswith("format") and r.score == 0.0


# ---- verdicts off the scale are clamped, as upstream's max(0, min(1, ·)) --------------------------
@pytest.mark.parametrize(
    ("source", "gt", "raw", "on_scale"),
    [
        ("math-hard", "2", 2.0, 1.0),
        ("math-hard", "2", -1.0, 0.0),
        ("minerva", "2", 3.0, 1.0),
        ("ambig_qa", "multipleQAs###x", 2.0, 1.0),
        ("abg-coqa", "ambiguous", 5.0, 1.0),
        ("medium", "1+1=\\boxed{2}", 8.0, 4.0),
        ("medium", "1+1=\\boxed{2}", -4.0, 0.0),
        ("wildguard", "harmful", 2.0, 1.0),
        ("wildguard", "harmful", -0.5, 0.0),
        ("wildguard", "unharmful", -1.0, 0.0),
        ("advbench", "Sure, here is", 1.5, 1.0),
    ],
)
def test_off_scale_verdict_scores_as_the_scale_end(scorer, source, gt, raw, on_scale) -> None:
    off = one(scorer, data_source=source, ground_truth=gt, judge=raw)
    edge = one(scorer, data_source=source, ground_truth=gt, judge=on_scale)
    assert (off.user, off.llm, off.score, off.answer_reward) == pytest.approx(
        (edge.user, edge.llm, edge.score, edge.answer_reward), abs=1e-12
    )
    assert off.judge == raw  # the verdict is logged as given


def test_math_verdict_two_is_verdict_one(scorer) -> None:
    r = one(scorer, judge=2.0)
    assert (r.user, r.llm, r.score) == pytest.approx((U1, L1, W1), abs=TOL) and r.answer_reward == 1.0
    assert score_output(WORKED_EXAMPLE, a_user=2.0)[0] == score_output(WORKED_EXAMPLE, a_user=1.0)[0]


def test_non_finite_verdict_counts_as_zero(scorer) -> None:
    r = one(scorer, judge=float("nan"))
    zero = one(scorer, judge=0.0)
    assert r.scored and r.judge == 0.0 and r.error.startswith("input")
    assert r.score == pytest.approx(zero.score, abs=1e-12)


def test_pareto_verdict_is_taken_as_given(scorer) -> None:
    """Upstream's call_pareto returns float(<po>…</po>) unclamped, and so do we."""
    r = one(scorer, judge=1.0, variant="ablation", pareto=2.0)
    assert r.pareto_score == 2.0 and r.llm == pytest.approx(L_ABLATION_P0 + 0.2 * 2.0, abs=TOL)


# ---- a payoff cell beyond float range scores 0 and never ends the run ----------------------------
HUGE_OUTPUT = WORKED_EXAMPLE.replace('"LLM": 4.1', f'"LLM": {HUGE}')


def test_huge_integer_cell_does_not_parse() -> None:
    parsed = parse_output(HUGE_OUTPUT)
    assert not parsed.ok and "float" in parsed.error
    util, parsed = score_output(HUGE_OUTPUT, a_user=1.0)
    assert util is None and not parsed.ok
    assert not parse_output("<payoff>" + "[" * 100_000 + "</payoff><response>x</response>").ok


@pytest.mark.parametrize("variant", ["main", "ablation"])
def test_huge_integer_cell_scores_zero_and_the_batch_goes_on(scorer, variant) -> None:
    out = scorer.score(
        [
            GTAlignSample("math-hard", HUGE_OUTPUT, "2", variant=variant),
            GTAlignSample("math-hard", WORKED_EXAMPLE, "2"),
        ]
    )
    assert not out[0].scored and out[0].error.startswith("format") and out[0].score == 0.0
    assert out[1].scored and out[1].score == pytest.approx(W1, abs=TOL)


def test_huge_integer_cell_through_the_cli(tmp_path, capsys) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = [
        {"data_source": "math-hard", "output": HUGE_OUTPUT, "ground_truth": "2"},
        {"data_source": "math-hard", "output": WORKED_EXAMPLE, "ground_truth": "2"},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["score", "--input", str(src), "--output", str(dst), "--quiet"]) == 0
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert len(out) == 2 and not out[0]["scored"] and out[0]["score"] == 0.0
    assert out[1]["score"] == pytest.approx(W1, abs=TOL)
    table = capsys.readouterr().out.splitlines()
    assert table[2].split()[:3] == ["math-hard", "2", "1"]  # n, unscored


@pytest.mark.parametrize("field", ["judge", "pareto"])
def test_huge_integer_verdict_is_a_counted_input_error(tmp_path, capsys, field) -> None:
    """float() of a 400-digit `judge` / `pareto` raises OverflowError; the record is an input error."""
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    bad = {"data_source": "math-hard", "output": WORKED_EXAMPLE, "ground_truth": "2", "variant": "ablation"}
    rows = [
        bad | {field: int(HUGE)},
        {"data_source": "math-hard", "output": WORKED_EXAMPLE, "ground_truth": "2"},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["score", "--input", str(src), "--output", str(dst), "--backend", "rules", "--quiet"]) == 0
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert len(out) == 2 and not out[0]["scored"] and out[0]["score"] == 0.0
    assert out[0]["error"].startswith("input:") and field in out[0]["error"] and len(out[0]["error"]) < 200
    assert out[1]["scored"] and out[1]["score"] == pytest.approx(W1, abs=TOL)
    table = capsys.readouterr().out.splitlines()
    assert table[2].split()[:3] == ["math-hard", "2", "1"]  # n, unscored


def test_unreadable_json_line_is_an_input_error_not_a_crash(tmp_path, capsys) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("[" * 100_000 + "\n")
    assert main(["score", "--input", str(src), "--output", str(tmp_path / "o"), "--quiet"]) == 2
    assert "not readable JSON" in capsys.readouterr().err


def test_any_error_while_preparing_a_sample_is_contained_and_counted(scorer, monkeypatch) -> None:
    real = gtalign.parse_output

    def fragile(text: str):
        if "boom" in text:
            raise ValueError("boom")
        return real(text)

    monkeypatch.setattr(gtalign, "parse_output", fragile)
    before = metrics.failures("fidelity", "rules", "error")
    out = scorer.score([GTAlignSample("math-hard", "boom"), GTAlignSample("math-hard", WORKED_EXAMPLE, "2")])
    assert not out[0].scored and out[0].error.startswith("error: ValueError")
    assert out[1].score == pytest.approx(W1, abs=TOL)
    assert metrics.failures("fidelity", "rules", "error") == before + 1


# ---- normalisation: upstream's formulas -----------------------------------------------------------
def upstream_quantile(scores: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """The recipe of gamellm_normalize's quantile mode, written from its description."""
    batch = np.sort(scores)
    out = np.empty_like(scores)
    for s in set(sources.tolist()):
        xs = np.sort(scores[sources == s])
        ps = (np.arange(len(xs)) + 0.5) / len(xs)
        for i in np.flatnonzero(sources == s):
            p = float(np.interp(scores[i], xs, ps, left=ps[0], right=ps[-1]))
            out[i] = batch[int(np.clip(p, 1e-6, 1 - 1e-6) * (len(batch) - 1))]
    return out


def test_quantile_takes_a_batch_value_by_position() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 30))
        scores = rng.integers(0, 5, n) / 4.0  # many ties
        sources = rng.choice(np.array(["a", "b", "c"], dtype=object), n)
        np.testing.assert_array_equal(
            normalize(scores, sources, "quantile"), upstream_quantile(scores, sources)
        )
    y = normalize([0.1, 0.2, 0.3, 0.9], ["a", "a", "b", "b"], "quantile")
    assert set(y.tolist()) <= {0.1, 0.2, 0.3, 0.9}  # values of the batch, never interpolated


def test_james_adds_the_epsilon_to_each_std() -> None:
    scores = np.array([0.5, 0.5 + 1e-7, 0.5, 0.7, 0.2])
    sources = np.array(["a", "a", "a", "b", "b"], dtype=object)
    sd_all = scores.std() + 1e-6
    expected = np.empty_like(scores)
    for s in ("a", "b"):
        g = scores[sources == s]
        lam = len(g) / (len(g) + 50)
        mu = lam * g.mean() + (1 - lam) * scores.mean()
        sd = math.sqrt(lam * (g.std() + 1e-6) ** 2 + (1 - lam) * sd_all**2)
        expected[sources == s] = (g - mu) / (sd + 1e-6)
    np.testing.assert_allclose(normalize(scores, sources, "james"), expected, rtol=1e-12)
    flat = normalize([0.5, 0.5 + 1e-7], ["a", "a"], "james")  # one group: σ̃ = σ + 1e-6, no σ := 1 floor
    assert flat[1] == pytest.approx(5e-8 / (5e-8 + 2e-6), rel=1e-6)


def test_decentralize_and_minmax_epsilons() -> None:
    x = [0.5, 0.5 + 4e-7, 0.5 + 2e-7]
    src = ["a", "a", "b"]
    sd = float(np.std(x)) + 1e-6  # no σ := 1 floor
    np.testing.assert_allclose(normalize(x, src, "decentralize"), [-2e-7 / sd, 2e-7 / sd, 0.0], rtol=1e-9)
    assert normalize(x, src, "minmax").tolist() == [0.0, 0.0, 0.0]  # span 4e-7 < 1e-6: constant group


# ---- dataset labels: exact lowercase, so the case-insensitive match never differs on them ---------
def test_dataset_labels_agree_with_the_exact_match() -> None:
    import pyarrow.parquet as pq

    files = sorted((VENDORED / "gtalign").glob("wildguard.*.parquet"))
    assert files
    labels = {
        row["ground_truth"] for f in files for row in pq.read_table(f).column("reward_model").to_pylist()
    }
    assert labels == {"harmful", "unharmful"}
    for label in labels:
        assert harm_tag("wildguard", label) == ("harmful" if label == "harmful" else "unharmful")


def test_label_case_and_spaces_are_ignored() -> None:
    assert harm_tag("wildguard", "Harmful") == harm_tag("wildguard", " harmful\n") == "harmful"
    assert harm_tag("wildguard", "Unharmful") == "unharmful"
    assert ambiguity_tag("ambig_qa", "MultipleQAs###x") == "ambiguous"
