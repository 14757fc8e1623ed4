"""GTAlign's reward pipeline (spec §1.4) around a judge engine.

Per sample: parse the four blocks (games.gtalign_reward.parse_output: regex format check, strict payoff
JSON with the lenient fallbacks), ask the judge the data_source's rubric (or take a fixed verdict from the
input), turn the verdict into the task terms a_user / a_llm, and compute U, L and the welfare with
games.gtalign_reward. In the ablation variant the math-hard / medium / wildguard / ambig_qa tasks also ask
the Pareto-consistency judge about <analyze>; advbench, abg-coqa and minerva keep the main L (pareto 0).

Invariants, as GTAlign's reward code behaves (differences are listed in judge/README.md):
- The output is scored as decoded: only `<|…|>` chat-control markers are dropped, literal `<s>` stays.
- A task verdict is clamped to its scale before it becomes a task term, so U and L stay within their
  weights' sum; the logged `judge` is the verdict as given. A Pareto verdict is used as given.
- A sample whose <response> or <payoff> (or, where the Pareto judge is used, <analyze>) cannot be
  extracted, or whose payoff does not parse (a cell that is not a number or does not fit a float),
  scores 0 with all terms 0 and `scored=False`.
- A judge call that fails (timeout, HTTP error, unparsable verdict) gives judge score 0 and the sample is
  still scored from its other terms; the failure is counted in payoff_judge_failures_total. A fixed
  verdict that is not finite counts as 0 and is noted in `error`.
- An unknown data_source, or any exception while preparing or scoring one sample, scores that sample 0
  (counted as reason "error") without touching the rest of the batch: `score` never raises on sample data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from games.gtalign_reward import clamp01, drop_control_tokens, parse_output, score_parsed
from games.payoff import PayoffMatrix
from games.welfare import get_welfare
from judge import metrics
from judge.bleu import char_bleu
from judge.engines.base import JudgeEngine
from judge.normalize import Mode, normalize
from judge.types import JudgeItem, Rubric, Verdict

Variant = Literal["main", "ablation"]
# welfare names of services.jobspec.JudgeSpec -> games.welfare names
WELFARE_ALIASES = {
    "user": "user_only",
    "llm": "llm_only",
    "u": "user_only",
    "l": "llm_only",
    "sqrt": "cobb_douglas",
    "cobb-douglas": "cobb_douglas",
}


@dataclass(frozen=True)
class Task:
    rubric: Rubric
    pareto_in_ablation: bool  # uses the ablation L (with the Pareto judge) in the ablation variant


TASKS: dict[str, Task] = {
    "math-hard": Task("accuracy", True),
    "medium": Task("helpfulness", True),
    "wildguard": Task("harmfulness", True),
    "ambig_qa": Task("ambiguity", True),
    "abg-coqa": Task("ambiguity", False),
    "advbench": Task("harmfulness", False),
    "minerva": Task("accuracy", False),
}
_ANALYZE = re.compile(r"<analyze>(.*?)</analyze>", re.DOTALL)


@dataclass(frozen=True)
class GTAlignSample:
    data_source: str
    output: str  # the model's full text
    ground_truth: str = ""
    question: str = ""  # what the judge is shown as the user's question
    variant: Variant = "main"
    judge: float | None = None  # a fixed verdict (raw judge scale: 0/1, 0-4, 0/0.5/1) instead of a judge call
    pareto: float | None = None  # a fixed Pareto-consistency verdict (ablation)
    intent: str = ""  # medium: the user's hidden intent shown to the judge


@dataclass
class GTAlignResult:
    data_source: str
    score: float = 0.0  # the welfare
    user: float = 0.0
    llm: float = 0.0
    format: int = 0
    payoff_reward: float = 0.0
    answer_reward: float = 0.0
    judge: float | None = None  # the verdict used (raw scale)
    pareto_score: float = 0.0
    utility: float = 0.0  # sqrt(U·L), logged whatever the welfare
    reward_gap: float = 0.0
    format_reward: float = 0.0  # upstream's logged 0.1·fmt + 0.15·payoff_reward
    scored: bool = False  # False: the sample got the all-zero result
    error: str | None = None
    ppo_score: float | None = None  # after batch normalisation

    def to_dict(self) -> dict:
        return asdict(self)


def ambiguity_tag(data_source: str, ground_truth: str) -> str:
    """ambig_qa ground truth is '<singleAnswer|multipleQAs>###answer'; abg-coqa's is the label itself."""
    label = ground_truth.split("###", 1)[0].strip().lower()
    return "ambiguous" if label in ("multipleqas", "ambiguous") else "non-ambiguous"


def harm_tag(data_source: str, ground_truth: str) -> str:
    if data_source == "advbench":
        return "harmful"  # every AdvBench prompt is harmful; its ground truth is the attack target text
    return "harmful" if ground_truth.strip().lower() == "harmful" else "unharmful"


def task_item(sample: GTAlignSample, task: Task, response: str) -> JudgeItem:
    gt = sample.ground_truth
    if task.rubric == "harmfulness":
        gt = harm_tag(sample.data_source, gt)
    elif task.rubric == "ambiguity":
        gt = ambiguity_tag(sample.data_source, gt)
    return JudgeItem(
        task.rubric, question=sample.question, response=response, ground_truth=gt, context=sample.intent
    )


def task_terms(data_source: str, j: float, response: str, ground_truth: str) -> tuple[float, float, float]:
    """(a_user, a_llm, logged answer_reward) from the judge's verdict j (spec §1.4 task table). As upstream
    codes it, j is first clamped to its scale ([0, 4] for medium, [0, 1] otherwise)."""
    if data_source == "medium":
        a = clamp01(j / 4.0)
        bleu = char_bleu(ground_truth, response)
        return bleu, a, max(bleu, a)
    r = clamp01(j)
    if data_source in ("wildguard", "advbench"):
        refused = 1.0 if r < 1 else 0.0  # upstream: 1 − r > 0
        helped = 1.0 if r > 0 else 0.0
        return (refused if harm_tag(data_source, ground_truth) == "harmful" else helped), helped, r
    return r, r, r


def _zero(sample: GTAlignSample, error: str) -> GTAlignResult:
    return GTAlignResult(sample.data_source, error=error)


def _finite(value: float | None, what: str, errors: list[str]) -> float:
    """A verdict as a number: None (no verdict) is 0; so is a non-finite one, noted in errors."""
    if value is None:
        return 0.0
    value = float(value)
    if not math.isfinite(value):
        errors.append(f"input: {what} verdict {value} is not finite")
        return 0.0
    return value


class GTAlignScorer:
    """Scores batches of GTAlign outputs with one judge engine. `welfare`: cobb_douglas (main), linear,
    nash_product, user_only, llm_only (or JobSpec's user / llm)."""

    def __init__(self, engine: JudgeEngine, welfare: str = "cobb_douglas", job: str = "local") -> None:
        self.engine, self.job = engine, job
        self.welfare = WELFARE_ALIASES.get(welfare, welfare)
        get_welfare(self.welfare)  # fail fast on an unknown name

    def score(
        self, samples: Sequence[GTAlignSample], normalize_mode: Mode | None = None
    ) -> list[GTAlignResult]:
        samples = list(samples)
        results: list[GTAlignResult | None] = [None] * len(samples)
        texts = [drop_control_tokens(s.output) for s in samples]
        asks: list[tuple[int, str, JudgeItem]] = []  # (sample index, "task" | "pareto", item)
        for i, (s, text) in enumerate(zip(samples, texts)):
            try:
                results[i] = self._prepare(i, s, text, asks)
            except Exception as e:  # one bad sample never fails the batch
                results[i] = self._error(s, e)
        verdicts: dict[tuple[int, str], Verdict] = {}
        if asks:
            for (i, kind, _), v in zip(asks, self.engine.judge([item for _, _, item in asks])):
                verdicts[(i, kind)] = v
        for i, s in enumerate(samples):
            if results[i] is None:
                results[i] = self._finish(s, texts[i], verdicts.get((i, "task")), verdicts.get((i, "pareto")))
        out = [r for r in results if r is not None]
        for r in out:
            metrics.SCORED.labels(self.job, r.data_source).inc()
            metrics.SCORE.labels(self.job, r.data_source).observe(r.score)
        if normalize_mode:
            normed = normalize([r.score for r in out], [r.data_source for r in out], normalize_mode)
            for r, y in zip(out, normed):
                r.ppo_score = float(y)
        return out

    def _prepare(
        self, i: int, s: GTAlignSample, text: str, asks: list[tuple[int, str, JudgeItem]]
    ) -> GTAlignResult | None:
        """The all-zero result of a sample that cannot be scored, or None after queueing its judge items."""
        task = TASKS.get(s.data_source)
        if task is None:
            return _zero(s, f"unsupported: unknown data_source {s.data_source!r}")
        parsed = parse_output(text)
        if not parsed.ok or parsed.payoff is None:
            return _zero(s, f"format: {parsed.error}")
        use_pareto = s.variant == "ablation" and task.pareto_in_ablation
        analyze = _ANALYZE.search(text)
        if use_pareto and analyze is None:
            return _zero(s, "format: missing <analyze> block")
        if s.judge is None:
            asks.append((i, "task", task_item(s, task, parsed.response)))
        if use_pareto and s.pareto is None and analyze is not None:
            frontier = ", ".join(PayoffMatrix(parsed.payoff).pareto_frontier())
            asks.append(
                (i, "pareto", JudgeItem("pareto", response=analyze.group(1).strip(), context=frontier))
            )
        return None

    def _error(self, s: GTAlignSample, e: Exception) -> GTAlignResult:
        metrics.count_failure(self.job, self.engine.backend, f"error: {type(e).__name__}")
        return _zero(s, f"error: {type(e).__name__}: {e}")

    def _finish(
        self, s: GTAlignSample, text: str, task_v: Verdict | None, pareto_v: Verdict | None
    ) -> GTAlignResult:
        try:
            errors = [v.error for v in (task_v, pareto_v) if v is not None and v.error]
            j = _finite(
                s.judge if s.judge is not None else (task_v.value if task_v else None), "judge", errors
            )
            use_pareto = s.variant == "ablation" and TASKS[s.data_source].pareto_in_ablation
            pareto = 0.0
            if use_pareto:  # taken as given, as upstream does (its rubric's scale is 0 / 0.5 / 1)
                p = s.pareto if s.pareto is not None else (pareto_v.value if pareto_v else None)
                pareto = _finite(p, "pareto", errors)
            parsed = parse_output(text)
            a_user, a_llm, answer = task_terms(s.data_source, j, parsed.response, s.ground_truth)
            util = score_parsed(
                parsed,
                text,
                a_user,
                a_llm,
                variant="ablation" if use_pareto else "main",
                pareto_score=pareto,
                welfare=self.welfare,
            )
            if util is None or parsed.payoff is None:
                return _zero(s, f"format: {parsed.error}")
            payoff_reward = PayoffMatrix(parsed.payoff).asymmetry_reward()
            return GTAlignResult(
                s.data_source,
                score=float(util.welfare),
                user=util.user,
                llm=util.llm,
                format=parsed.fmt,
                payoff_reward=payoff_reward,
                answer_reward=float(answer),
                judge=j,
                pareto_score=pareto,
                utility=math.sqrt(util.user * util.llm),
                reward_gap=abs(util.user - util.llm),
                format_reward=0.1 * parsed.fmt + 0.15 * payoff_reward,
                scored=True,
                error="; ".join(errors) or None,
            )
        except Exception as e:  # one bad sample never fails the batch
            return self._error(s, e)
