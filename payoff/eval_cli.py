"""`payoff eval` — evaluate models on GTAlign's test sets the way the paper does.

    payoff eval MODEL [--sets math-hard,ambig_qa,wildguard] [--limit 50] [--samples 1] [--out DIR]
    payoff eval --compare A B [...]          two models side by side, paired bootstrap on the welfare
    payoff eval ... --remote                 run it on the cluster: POST /v1/evals, follow its progress
    payoff eval --spec eval.yaml             a whole EvalSpec (services/evals.py) from a file

MODEL is a model directory or checkpoint, a built-in name (smollm2-135m, tiny-qwen3, …), a hub id,
`job:<id>` (the job's latest checkpoint, looked up on the gateway), or an OpenAI-compatible base URL
(`http(s)://…/v1`, with `--api-model NAME`; a payoff gateway serves a job's model at `<gateway>/v1` under
the job id). Writes report.json, table.txt and PNG bar charts (welfare, format rate, user, LLM utility per
data source) to --out, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from services.evals import MAIN_SETS, EvalModel, EvalReport, EvalSpec


def model_ref(ref: str, api_model: str | None, api_key_env: str | None) -> EvalModel:
    if ref.startswith(("http://", "https://")):
        return EvalModel(url=ref, model=api_model, api_key_env=api_key_env, label=api_model)
    if ref.startswith("job:"):
        return EvalModel(job=ref[4:], label=ref)
    return EvalModel(path=ref)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="payoff eval", description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", help="model to evaluate (see above)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two models: B − A with a bootstrap CI")
    p.add_argument("--spec", help="an EvalSpec YAML/JSON file (other options override it)")
    p.add_argument("--sets", help=f"comma-separated test sets (default {','.join(MAIN_SETS)})")
    p.add_argument("--limit", type=int, help="prompts per set (default 50)")
    p.add_argument("--samples", type=int, help="samples per prompt (default 1)")
    p.add_argument("--max-tokens", type=int, help="tokens per answer (default 512)")
    p.add_argument("--max-prompt-tokens", type=int, help="longer prompts count as errors (default 2048)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 0.7)")
    p.add_argument("--seed", type=int)
    p.add_argument("--variant", choices=["main", "ablation"])
    p.add_argument("--judge", choices=["rules", "transformers", "openai", "sglang"], help="judge backend")
    p.add_argument("--judge-model", help="judge model (transformers / sglang / openai)")
    p.add_argument("--judge-url", help="judge endpoint (openai / sglang)")
    p.add_argument("--api-model", help="model name at an endpoint MODEL")
    p.add_argument("--api-key-env", help="env var holding the endpoint's key")
    p.add_argument("--threads", type=int, help="torch threads of a local model (default 1)")
    p.add_argument("--out", default="eval-out", help="directory for report.json, table.txt, charts")
    p.add_argument("--remote", action="store_true", help="run on the cluster through the gateway")
    p.add_argument("--url", help="gateway URL ($PAYOFF_URL), for job: models and --remote")
    p.add_argument("--api-key", help="API key ($PAYOFF_API_KEY)")
    return p


def spec_from_args(args: argparse.Namespace) -> EvalSpec:
    data = {}
    if args.spec:
        data = EvalSpec.from_text(Path(args.spec).read_text()).model_dump(exclude_unset=True)
    refs = list(args.compare) if args.compare else ([args.model] if args.model else [])
    if refs:
        data["models"] = [
            model_ref(r, args.api_model, args.api_key_env).model_dump(exclude_none=True) for r in refs
        ]
    if not data.get("models"):
        raise SystemExit("payoff eval: name a MODEL, --compare A B, or --spec FILE with models")
    for key in (
        "limit",
        "samples",
        "max_tokens",
        "max_prompt_tokens",
        "temperature",
        "seed",
        "variant",
        "threads",
    ):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    if args.sets:
        data["sets"] = [s.strip() for s in args.sets.split(",") if s.strip()]
    judge = dict(data.get("judge") or {})
    for key, value in (("backend", args.judge), ("model", args.judge_model), ("url", args.judge_url)):
        if value is not None:
            judge[key] = value
    data["judge"] = judge
    return EvalSpec.model_validate(data)


def _gateway(args):
    import os

    from gateway.client_cli import DEFAULT_URL

    args.url = args.url or os.environ.get("PAYOFF_URL", DEFAULT_URL)
    args.api_key = args.api_key or os.environ.get("PAYOFF_API_KEY")
    return args


def job_checkpoint(args) -> callable:
    from gateway.client_cli import _request

    def resolve(job_id: str) -> str:
        job = _request(_gateway(args), "GET", f"/v1/jobs/{job_id}")
        path = (job.get("summary") or {}).get("last_checkpoint")
        if not path:
            raise SystemExit(f"payoff eval: job {job_id} has no checkpoint yet (state {job.get('state')})")
        return path

    return resolve


def run_local(spec: EvalSpec, args) -> EvalReport:
    from payoff.evaluate import Evaluation

    t0, last = time.monotonic(), [0.0]

    def show(p) -> None:
        if time.monotonic() - last[0] < 1.0 and p.done < p.total:
            return
        last[0] = time.monotonic()
        rate = p.done / max(time.monotonic() - t0, 1e-9)
        eta = (p.total - p.done) / rate if rate > 0 else 0
        print(
            f"\r[eval] {p.model} {p.data_source or ''}: {p.done}/{p.total} samples, eta {eta:.0f} s   ",
            end="",
            file=sys.stderr,
            flush=True,
        )

    report = Evaluation(spec, resolve_job=job_checkpoint(args), on_progress=show).run()
    print(file=sys.stderr)
    return report


def run_remote(spec: EvalSpec, args) -> EvalReport:
    from gateway.client_cli import _request

    args = _gateway(args)
    rec = _request(args, "POST", "/v1/evals", json=spec.model_dump(mode="json"))
    print(f"eval {rec['id']} submitted", file=sys.stderr)
    while True:
        rec = _request(args, "GET", f"/v1/evals/{rec['id']}")
        p = rec.get("progress") or {}
        print(f"\r[eval] {rec['state']}: {p.get('done', 0)}/{p.get('total', 0)}   ", end="", file=sys.stderr)
        if rec["state"] in ("succeeded", "failed", "cancelled"):
            print(file=sys.stderr)
            break
        time.sleep(2.0)
    if rec["state"] != "succeeded":
        raise SystemExit(f"payoff eval: {rec['id']} {rec['state']}: {rec.get('error') or ''}")
    return EvalReport.model_validate(_request(args, "GET", f"/v1/evals/{rec['id']}/report"))


def write(report: EvalReport, out: Path) -> list[Path]:
    from payoff.eval_report import charts, table

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(report.model_dump_json(indent=1))
    text = table(report)
    (out / "table.txt").write_text(text + "\n")
    print(text)
    return [out / "report.json", out / "table.txt", *charts(report, out)]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pydantic import ValidationError

    from services.jobspec import JobSpecError

    try:
        spec = spec_from_args(args)
    except (ValidationError, JobSpecError) as e:
        errors = JobSpecError.from_validation(e) if isinstance(e, ValidationError) else e
        print(f"payoff eval: invalid evaluation: {errors}", file=sys.stderr)
        return 2
    report = run_remote(spec, args) if args.remote else run_local(spec, args)
    paths = write(report, Path(args.out))
    print("wrote " + ", ".join(str(p) for p in paths))
    if report.comparison:
        print(json.dumps({c.data_source: round(c.diff, 4) for c in report.comparison}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
