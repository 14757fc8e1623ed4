"""`payoff judge` — score model outputs with a judge.

    payoff judge score --input outputs.jsonl --output scored.jsonl
        [--backend rules|transformers|sglang|openai] [--normalize zscore] [--serve]
    payoff judge preference --input groups.jsonl --output winrates.jsonl
    payoff judge safety --input pairs.jsonl --output labels.jsonl

score: IN is JSONL or parquet; each record has data_source, output (the model's full text), ground_truth,
optionally judge (a fixed verdict used instead of calling the judge), pareto, question, intent and variant
(main | ablation). Writes one JSON line per input record, in order, with score, user (U), llm (L), format,
payoff_reward and the other terms, then prints a breakdown by data_source and the throughput.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from judge.config import JudgeConfig, SamplingConfig


class InputError(ValueError):
    pass


def read_records(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    records = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: not JSON ({e.msg})") from None
            except (ValueError, RecursionError) as e:  # an integer over 4300 digits, nesting too deep
                raise InputError(f"{path}:{n}: not readable JSON ({type(e).__name__})") from None
            if not isinstance(rec, dict):
                raise InputError(f"{path}:{n}: a record must be a JSON object")
            records.append(rec)
    return records


def _question(rec: dict[str, Any]) -> str:
    q = rec.get("question")
    if isinstance(q, str):
        return q
    prompt = rec.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):  # a chat: the last user turn
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        if users:
            return str(users[-1])
    extra = rec.get("extra_info") or {}
    return str(extra.get("single_turn_prompt") or "") if isinstance(extra, dict) else ""


def _ground_truth(rec: dict[str, Any]) -> str:
    gt = rec.get("ground_truth")
    if gt is None and isinstance(rec.get("reward_model"), dict):
        gt = rec["reward_model"].get("ground_truth")
    return "" if gt is None else str(gt)


def _optional_float(rec: dict[str, Any], key: str) -> float | None:
    value = rec.get(key)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except OverflowError:  # an integer beyond float range; its repr may be thousands of digits
        raise InputError(f"field {key!r} is a number too large for a float") from None
    except (TypeError, ValueError):
        raise InputError(f"field {key!r} must be a number, got {value!r:.60}") from None


def to_sample(rec: dict[str, Any], default_variant: str):
    from judge.gtalign import GTAlignSample

    for key in ("data_source", "output"):
        if not isinstance(rec.get(key), str):
            raise InputError(f"missing or non-text field {key!r}")
    variant = rec.get("variant") or default_variant
    if variant not in ("main", "ablation"):
        raise InputError(f"variant must be main or ablation, got {variant!r}")
    return GTAlignSample(
        data_source=rec["data_source"],
        output=rec["output"],
        ground_truth=_ground_truth(rec),
        question=_question(rec),
        variant=variant,
        judge=_optional_float(rec, "judge"),
        pareto=_optional_float(rec, "pareto"),
        intent=str(rec.get("intent") or ""),
    )


class Progress:
    """A one-line progress display on stderr for inputs longer than one batch."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.t0 = total, enabled, time.perf_counter()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else 0.0
        print(
            f"\r[judge] {done}/{self.total} ({100 * done / max(self.total, 1):.0f}%) "
            f"{rate:.1f} rec/s, eta {eta:.0f}s",
            end="",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.enabled:
            print(file=sys.stderr, flush=True)


def breakdown(rows: list[dict[str, Any]]) -> str:
    """Per data_source: count, unscored (format/input failures: score 0), scored with a failed judge call,
    and the means of score / U / L / format / payoff_reward / judge verdict."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r.get("data_source") or "?", []).append(r)
    if len(groups) > 1:
        groups["ALL"] = rows
    norm = any(r.get("ppo_score") is not None for r in rows)
    head = ["data_source", "n", "unscored", "judge_fail", "score", "user", "llm", "format", "payoff", "judge"]
    head += ["ppo_mean", "ppo_std"] if norm else []
    lines = [head]
    for name, g in groups.items():

        def mean(key: str, g=g) -> float:
            vals = [float(r[key]) for r in g if r.get(key) is not None]
            return sum(vals) / len(vals) if vals else float("nan")

        row = [
            name,
            str(len(g)),
            str(sum(not r.get("scored") for r in g)),
            str(sum(bool(r.get("scored")) and r.get("error") is not None for r in g)),
        ]
        row += [f"{mean(k):.4f}" for k in ("score", "user", "llm", "format", "payoff_reward", "judge")]
        if norm:
            ppo = [float(r["ppo_score"]) for r in g if r.get("ppo_score") is not None]
            mu = sum(ppo) / len(ppo) if ppo else float("nan")
            sd = (sum((p - mu) ** 2 for p in ppo) / len(ppo)) ** 0.5 if ppo else float("nan")
            row += [f"{mu:.4f}", f"{sd:.4f}"]
        lines.append(row)
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]

    def fmt(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([fmt(lines[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in lines[1:]])


def _config(args: argparse.Namespace) -> JudgeConfig:
    fields: dict[str, Any] = {
        "backend": args.backend,
        "model": args.model,
        "url": args.url,
        "api_key_env": args.api_key_env,
        "job": args.job,
        "timeout_s": args.timeout_s,
        "max_retries": args.max_retries,
        "concurrency": args.concurrency,
        "parse_retries": args.parse_retries,
        "batch_size": args.engine_batch,
    }
    if args.max_tokens is not None:
        base = JudgeConfig(backend=args.backend, url=args.url or "http://placeholder").sampling
        fields["sampling"] = SamplingConfig(**{**base.model_dump(), "max_tokens": args.max_tokens})
    if args.serve:
        fields["serve"] = {"num_cpus": args.num_cpus, "replicas": args.replicas}
    return JudgeConfig(**{k: v for k, v in fields.items() if v is not None})


class _Scorer:
    """In-process engine, or the judge deployed on Ray Serve (--serve) and called through its handle."""

    def __init__(self, config: JudgeConfig, welfare: str, serve: bool) -> None:
        self.config, self.welfare, self.serve, self.app = config, welfare, serve, None
        if serve:
            from judge.serve import deploy
            from services.judge_api import JudgeClient
            from services.ray_utils import init_ray

            init_ray()
            self.app = f"judge-cli-{int(time.time())}"
            deploy(config, app_name=self.app)
            self.client = JudgeClient(self.app)
        else:
            from judge.engines import make_engine
            from judge.gtalign import GTAlignScorer

            self.engine = make_engine(config)
            self.scorer = GTAlignScorer(self.engine, welfare=welfare, job=config.job)

    def score(self, samples: list) -> list[dict[str, Any]]:
        if not self.serve:
            return [r.to_dict() for r in self.scorer.score(samples)]
        from services.judge_api import GTAlignItem, ScoreRequest

        items = [GTAlignItem(**vars(s)) for s in samples]
        resp = self.client.score(ScoreRequest(items=items, welfare=self.welfare))
        return [r.model_dump() for r in resp.results]

    def close(self) -> None:
        if self.serve and self.app:
            from ray import serve

            serve.delete(self.app)
        elif not self.serve:
            self.engine.close()


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def cmd_score(args: argparse.Namespace) -> int:
    from judge.normalize import normalize

    records = read_records(args.input)[: args.limit] if args.limit else read_records(args.input)
    samples: list[Any] = []
    rows: list[dict[str, Any] | None] = [None] * len(records)
    for i, rec in enumerate(records):
        try:
            samples.append((i, to_sample(rec, args.variant)))
        except InputError as e:
            rows[i] = {
                "data_source": rec.get("data_source"),
                "score": 0.0,
                "user": 0.0,
                "llm": 0.0,
                "format": 0,
                "payoff_reward": 0.0,
                "scored": False,
                "error": f"input: {e}",
            }
    config = _config(args)
    t0 = time.perf_counter()
    scorer = _Scorer(config, args.welfare, args.serve)
    t_ready = time.perf_counter()
    progress = Progress(len(samples), enabled=not args.quiet and len(samples) > args.batch_size)
    try:
        for start, stop in _chunks(len(samples), args.batch_size):
            chunk = samples[start:stop]
            for (i, _), row in zip(chunk, scorer.score([s for _, s in chunk])):
                rows[i] = row
            progress.update(stop)
        elapsed = time.perf_counter() - t_ready
    finally:
        progress.close()
        scorer.close()
    done = [r for r in rows if r is not None]
    if args.normalize:
        for r, y in zip(
            done, normalize([r["score"] for r in done], [str(r["data_source"]) for r in done], args.normalize)
        ):
            r["ppo_score"] = float(y)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for i, (rec, row) in enumerate(zip(records, done)):
            line = {"index": i, **({"id": rec["id"]} if "id" in rec else {}), **row}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    print(breakdown(done))
    rate = len(samples) / elapsed if elapsed > 0 else float("inf")
    print(
        f"\n{len(done)} records -> {out}; judge {config.backend}"
        f"{' (' + config.model + ')' if config.model else ''}{' via Ray Serve' if args.serve else ''}: "
        f"{len(samples)} scored in {elapsed:.2f}s ({rate:.1f} rec/s; startup {t_ready - t0:.1f}s)"
    )
    return 0


def cmd_preference(args: argparse.Namespace) -> int:
    from judge.engines import make_engine
    from judge.preference import PreferenceJudge

    records = read_records(args.input)
    with make_engine(_config(args)) as engine:
        judge = PreferenceJudge(engine, soft=not args.hard)
        with Path(args.output).open("w", encoding="utf-8") as f:
            for i, rec in enumerate(records):
                wr = judge.win_rates(
                    _question(rec), [str(r) for r in rec.get("responses") or []], _ground_truth(rec)
                )
                f.write(
                    json.dumps(
                        {
                            "index": i,
                            "matrix": wr.matrix.tolist(),
                            "scores": wr.scores.tolist(),
                            "ranking": wr.ranking(),
                            "n_soft": wr.n_soft,
                            "n_hard": wr.n_hard,
                            "n_failed": wr.n_failed,
                        }
                    )
                    + "\n"
                )
    print(f"{len(records)} groups -> {args.output}")
    return 0


def cmd_safety(args: argparse.Namespace) -> int:
    from judge.engines import make_engine
    from judge.safety import SafetyJudge

    records = read_records(args.input)
    with make_engine(_config(args)) as engine:
        labels = SafetyJudge(engine).labels(
            [str(r.get("prompt", "")) for r in records],
            [str(r.get("response", "")) for r in records],
            [str(r.get("prompt_tag", "")) for r in records],
        )
    with Path(args.output).open("w", encoding="utf-8") as f:
        for i, lab in enumerate(labels):
            f.write(json.dumps({"index": i, "labels": None if lab is None else vars(lab)}) + "\n")
    print(f"{len(records)} pairs -> {args.output}; ties (dropped): {sum(lab is None for lab in labels)}")
    return 0


def _engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("judge engine")
    g.add_argument("--backend", choices=["rules", "transformers", "sglang", "openai"], default="rules")
    g.add_argument("--model", help="judge model (sglang: Qwen/Qwen3-32B; transformers: tiny-qwen3)")
    g.add_argument("--url", help="base URL of an OpenAI-compatible endpoint (…/v1)")
    g.add_argument("--api-key-env", help="environment variable holding the endpoint key")
    g.add_argument("--timeout-s", type=float, help="per-request timeout")
    g.add_argument("--max-retries", type=int, help="transport retries after the first attempt")
    g.add_argument("--concurrency", type=int, help="requests in flight (HTTP backends)")
    g.add_argument("--max-tokens", type=int, help="judge reply length")
    g.add_argument("--parse-retries", type=int, help="re-ask a judge whose verdict does not parse")
    g.add_argument("--engine-batch", type=int, help="prompts per forward pass (transformers)")
    g.add_argument("--job", default="cli", help="value of the job label on judge metrics")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="payoff judge", description="Score model outputs with a judge.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score", help="GTAlign welfare rewards of model outputs")
    s.add_argument("--input", required=True, help="JSONL or parquet of model outputs")
    s.add_argument("--output", required=True, help="JSONL, one line per input record")
    s.add_argument(
        "--welfare",
        default="cobb_douglas",
        choices=["cobb_douglas", "linear", "nash_product", "user_only", "llm_only", "user", "llm"],
    )
    s.add_argument(
        "--normalize",
        choices=["zscore", "minmax", "robustz", "cdf", "quantile", "james", "decentralize", "selfadapt"],
        help="add ppo_score per data_source",
    )
    s.add_argument("--variant", choices=["main", "ablation"], default="main", help="for records without one")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--limit", type=int, help="score only the first N records")
    s.add_argument("--serve", action="store_true", help="run the judge as a Ray Serve deployment")
    s.add_argument("--replicas", type=int, default=1)
    s.add_argument("--num-cpus", type=float, default=0.5, help="CPUs per Serve replica")
    s.add_argument("--quiet", action="store_true", help="no progress line")
    _engine_args(s)
    s.set_defaults(func=cmd_score)
    pr = sub.add_parser("preference", help="win-rate matrix of each group {question, responses}")
    pr.add_argument("--input", required=True)
    pr.add_argument("--output", required=True)
    pr.add_argument("--hard", action="store_true", help="hard labels only (no logprobs)")
    _engine_args(pr)
    pr.set_defaults(func=cmd_preference, serve=False)
    sf = sub.add_parser("safety", help="red-team safety labels of {prompt, response[, prompt_tag]}")
    sf.add_argument("--input", required=True)
    sf.add_argument("--output", required=True)
    _engine_args(sf)
    sf.set_defaults(func=cmd_safety, serve=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (InputError, ValueError, FileNotFoundError) as e:
        print(f"payoff judge: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
