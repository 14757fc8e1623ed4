"""`payoff eval`'s engine: generate on GTAlign test prompts, score with the job's judge pipeline, report.

One evaluation = for each model (one or two), for each set, `limit` prompts evenly spaced over the test
file × `samples` seeded samples → the model's four-block text → `judge.gtalign.GTAlignScorer` (the same
parse, judge rubric, utilities and welfare as training) → per-sample rows → per-source metrics
(payoff/eval_report.py) and, with two models, the paired bootstrap of the welfare difference.

Invariants:
- Both models see the same prompts with the same seeds (seed · 1_000_003 + prompt position · 16 + sample),
  so their samples pair up one to one.
- Nothing a model writes can end the run: a failed generation (endpoint error after retries, a prompt
  over `max_prompt_tokens`) is an empty output, scores 0 and is counted in `generation_errors`; the
  scorer never raises on sample data.
- Progress is reported after every batch and the stop check runs there too: cancelling loses at most
  one batch of work and never leaves a model loaded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from services.evals import EvalModel, EvalProgress, EvalReport, EvalSpec, ModelReport


class EvalCancelled(Exception):
    pass


def prompt_positions(n: int, limit: int) -> list[int]:
    """`limit` indices spread evenly over a file of `n` rows (all of them if it has fewer)."""
    if limit >= n:
        return list(range(n))
    return [i * n // limit for i in range(limit)]


# ---------------------------------------------------------------- generators
class LocalGenerator:
    """A model directory, checkpoint, built-in name or hub id on the transformers engine."""

    def __init__(self, path: str, spec: EvalSpec) -> None:
        from rollout.hf_engine import HFEngine

        self.engine = HFEngine(path, threads=spec.threads)
        self.resolved, self.spec = self.engine.model_path, spec
        self.errors: list[str] = []

    def generate(self, chats: list[list[dict]], seeds: list[int]) -> list[str | None]:
        from rollout.engine import GenRequest, SamplingParams

        s, out, reqs, where = self.spec, [None] * len(chats), [], []
        room = min(s.max_prompt_tokens, self.engine.max_context - 1)
        for i, (chat, seed) in enumerate(zip(chats, seeds)):
            ids = self.engine.chat_prompt_ids(chat)
            if len(ids) > room:
                self.errors.append(f"prompt of {len(ids)} tokens over {room}")
                continue  # None: counted as a generation error
            params = SamplingParams(
                max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p, seed=seed
            )
            reqs.append(GenRequest(prompt_ids=ids, params=params))
            where.append(i)
        for i, o in zip(where, self.engine.generate(reqs) if reqs else []):
            out[i] = self.engine.tokenizer.decode(o.token_ids, skip_special_tokens=True)
        return out

    def close(self) -> None:
        self.engine.close()


class EndpointGenerator:
    """An OpenAI-compatible chat endpoint (a payoff gateway serving a job, vLLM, SGLang, a hosted API)."""

    RETRYABLE = {408, 429, 500, 502, 503, 504}

    def __init__(self, model: EvalModel, spec: EvalSpec, timeout_s: float = 300.0, retries: int = 3) -> None:
        import httpx

        key = os.environ.get(model.api_key_env, "") if model.api_key_env else ""
        self.client = httpx.Client(
            base_url=str(model.url).rstrip("/"),
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            headers={"Authorization": f"Bearer {key or 'EMPTY'}"},
        )
        self.model, self.spec, self.retries = model.model or "default", spec, retries
        self.resolved = f"{model.url} model={self.model}"
        self.errors: list[str] = []

    def _one(self, chat: list[dict], seed: int) -> str | None:
        import httpx

        s = self.spec
        body = {"model": self.model, "messages": chat, "max_tokens": s.max_tokens}
        body.update(temperature=s.temperature, top_p=s.top_p, seed=seed)
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(0.5 * 2.0**attempt, 30.0))
            try:
                resp = self.client.post("/chat/completions", json=body)
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if resp.status_code in self.RETRYABLE:
                last = f"status {resp.status_code}"
                continue
            try:
                resp.raise_for_status()
                return str(resp.json()["choices"][0]["message"]["content"] or "")
            except Exception as e:  # 4xx or a malformed body: another attempt will not help
                last = f"status {resp.status_code}: {type(e).__name__} {resp.text[:200]}"
                break
        self.errors.append(last)
        return None

    def generate(self, chats: list[list[dict]], seeds: list[int]) -> list[str | None]:
        with ThreadPoolExecutor(max_workers=min(8, len(chats)) or 1) as pool:
            return list(pool.map(self._one, chats, seeds))

    def close(self) -> None:
        self.client.close()


def make_generator(model: EvalModel, spec: EvalSpec, resolve_job: Callable[[str], str] | None):
    if model.url:
        return EndpointGenerator(model, spec)
    if model.job:
        if resolve_job is None:
            raise ValueError(f"model job={model.job}: no way to look up the job's checkpoint here")
        return LocalGenerator(resolve_job(model.job), spec)
    return LocalGenerator(str(model.path), spec)


# ---------------------------------------------------------------- scoring
def _rows(records, outputs: list[str | None], results) -> list[dict]:
    from games.gtalign_reward import parse_output
    from judge.engines.rules import refuses
    from judge.gtalign import ambiguity_tag, harm_tag
    from payoff.eval_report import AMBIGUITY_SETS, HARM_SETS

    rows = []
    for rec, text, res in zip(records, outputs, results):
        response = parse_output(text or "").response or ""
        ds = rec.data_source
        tag = ""
        if ds in AMBIGUITY_SETS:
            tag = ambiguity_tag(ds, rec.ground_truth)
        elif ds in HARM_SETS:
            tag = harm_tag(ds, rec.ground_truth)
        rows.append(
            {
                **{k: getattr(res, k) for k in ("data_source", "score", "user", "llm", "format")},
                **{k: getattr(res, k) for k in ("payoff_reward", "answer_reward", "scored")},
                "judge_failed": bool(res.scored and res.error),
                "generation_error": text is None,
                "tag": tag,
                "asks": "?" in response,
                "refuses": refuses(response),
                "response_words": len(response.split()),
            }
        )
    return rows


class Evaluation:
    """Runs one EvalSpec. `on_progress(EvalProgress)` after each batch; `should_stop()` → EvalCancelled."""

    def __init__(
        self,
        spec: EvalSpec,
        resolve_job: Callable[[str], str] | None = None,
        on_progress: Callable[[EvalProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        from games.data import load_gtalign
        from judge.config import JudgeConfig
        from judge.engines import make_engine
        from judge.gtalign import GTAlignScorer

        self.spec, self.resolve_job = spec, resolve_job
        self.on_progress, self.should_stop = on_progress or (lambda p: None), should_stop or (lambda: False)
        self.records = {}
        for name in spec.sets:
            rows = load_gtalign(name)
            self.records[name] = [rows[i] for i in prompt_positions(len(rows), spec.limit)]
        engine = make_engine(JudgeConfig.from_spec(spec.judge, job="eval"))
        self.scorer = GTAlignScorer(engine, welfare=spec.judge.welfare, job="eval")
        per_model = sum(len(r) for r in self.records.values()) * spec.samples
        self.progress = EvalProgress(total=per_model * len(spec.models))

    def run(self) -> EvalReport:
        from payoff.eval_report import compare

        models = [self._model(m) for m in self.spec.models]
        report = EvalReport(name=self.spec.name, spec=self.spec, models=models)
        report.comparison = compare(report)
        return report

    def _model(self, model: EvalModel) -> ModelReport:
        from payoff.eval_report import aggregate

        t0 = time.monotonic()
        self.progress.model = model.name
        self.on_progress(self.progress)
        gen = make_generator(model, self.spec, self.resolve_job)
        try:
            by_set = {name: self._set(gen, name) for name in self.spec.sets}
        finally:
            gen.close()
        all_rows = [r for rows in by_set.values() for r in rows]
        return ModelReport(
            label=model.name,
            resolved=gen.resolved,
            sets=[aggregate(rows, name) for name, rows in by_set.items()],
            overall=aggregate(all_rows, "ALL"),
            welfare={name: [float(r["score"]) for r in rows] for name, rows in by_set.items()},
            seconds=time.monotonic() - t0,
            generation_errors=sum(r["generation_error"] for r in all_rows),
        )

    def _set(self, gen, name: str) -> list[dict]:
        from judge.gtalign import GTAlignSample

        s = self.spec
        work = [(pos, rec, k) for pos, rec in enumerate(self.records[name]) for k in range(s.samples)]
        self.progress.data_source = name
        rows: list[dict] = []
        for start in range(0, len(work), s.batch_size):
            if self.should_stop():
                raise EvalCancelled("cancelled")
            chunk = work[start : start + s.batch_size]
            seeds = [s.seed * 1_000_003 + pos * 16 + k for pos, _, k in chunk]
            outputs = gen.generate([list(rec.messages) for _, rec, _ in chunk], seeds)
            recs = [rec for _, rec, _ in chunk]
            samples = [
                GTAlignSample(
                    data_source=rec.data_source,
                    output=text or "",
                    ground_truth=rec.ground_truth,
                    question=rec.question,
                    variant=s.variant,
                )
                for rec, text in zip(recs, outputs)
            ]
            rows += _rows(recs, outputs, self.scorer.score(samples))
            self.progress.done += len(chunk)
            self.on_progress(self.progress)
        return rows
