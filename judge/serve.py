"""The judge as a Ray Serve deployment with its own replicas (services/judge_api.py is its contract).

Each replica builds one engine from the JudgeConfig: a rules judge, a transformers model, an external
OpenAI-compatible endpoint, or a managed SGLang server (the replica then reserves tp·dp GPUs). Replicas
take fractional CPUs, so a laptop fits a judge beside rollout and learner. Engine calls are blocking and
run in a worker thread; the replica's event loop keeps serving health checks meanwhile.

    app = build_app(JudgeConfig(backend="transformers", model="tiny-qwen3"))
    handle = serve.run(app, name="judge", route_prefix="/judge")
"""

from __future__ import annotations

import asyncio
import time

from fastapi import Depends, FastAPI
from fastapi.responses import PlainTextResponse
from ray import serve

from judge.config import JudgeConfig
from services.internal_auth import require_internal
from services.judge_api import (
    APP_NAME,
    GPORequest,
    GPOResponse,
    GPORewardModel,
    HealthResponse,
    PreferenceRequest,
    PreferenceResponse,
    SafetyLabelsModel,
    SafetyRequest,
    SafetyResponse,
    ScoreRequest,
    ScoreResponse,
    ScoreResult,
    VerdictRequest,
    VerdictResponse,
    VerdictResult,
)

# every HTTP route needs the internal token (services/internal_auth.py); handles bypass HTTP
api = FastAPI(title="payoff judge", dependencies=[Depends(require_internal)])


@serve.deployment(name="judge")
@serve.ingress(api)
class JudgeDeployment:
    def __init__(self, config: dict) -> None:
        from judge.engines import make_engine
        from judge.gtalign import GTAlignScorer

        self.config = JudgeConfig.model_validate(config)
        self.engine = make_engine(self.config)
        self.scorer = GTAlignScorer(self.engine, job=self.config.job)
        self._embedder = None

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()

    # ---- sync bodies (run in a thread) ------------------------------------------------------------
    def _score(self, req: ScoreRequest) -> ScoreResponse:
        from judge.gtalign import GTAlignSample, GTAlignScorer

        t0 = time.perf_counter()
        scorer = (
            self.scorer
            if req.welfare == "cobb_douglas"
            else GTAlignScorer(self.engine, welfare=req.welfare, job=self.config.job)
        )
        results = scorer.score([GTAlignSample(**item.model_dump()) for item in req.items], req.normalize)
        return ScoreResponse(
            results=[ScoreResult(**r.to_dict()) for r in results],
            backend=self.engine.backend,
            elapsed_s=time.perf_counter() - t0,
        )

    def _verdicts(self, req: VerdictRequest) -> VerdictResponse:
        from judge.types import JudgeItem

        verdicts = self.engine.judge([JudgeItem(**item.model_dump()) for item in req.items])
        return VerdictResponse(
            results=[
                VerdictResult(value=v.value, error=v.error, text=v.text, labels=v.labels) for v in verdicts
            ]
        )

    def _preference(self, req: PreferenceRequest) -> PreferenceResponse:
        from judge.preference import PreferenceJudge

        judge = PreferenceJudge(self.engine, soft=req.soft)
        wr = judge.win_rates(req.question, req.responses, req.ground_truth)
        return PreferenceResponse(
            matrix=wr.matrix.tolist(),
            scores=wr.scores.tolist(),
            n_soft=wr.n_soft,
            n_hard=wr.n_hard,
            n_failed=wr.n_failed,
        )

    def _safety(self, req: SafetyRequest) -> SafetyResponse:
        from judge.safety import SafetyJudge

        labels = SafetyJudge(self.engine).labels(req.prompts, req.responses, req.prompt_tags)
        return SafetyResponse(
            labels=[None if lab is None else SafetyLabelsModel(**vars(lab)) for lab in labels]
        )

    def _gpo(self, req: GPORequest) -> GPOResponse:
        from judge.gpo import DiversityBuffer, GPOScorer

        if self._embedder is None:
            from judge.embeddings import Embedder

            self._embedder = Embedder()
        buffer = DiversityBuffer(self._embedder)
        buffer.score_and_add(req.history)
        rewards = GPOScorer(self.engine, buffer).score(req.prompts, req.replies, req.adversary_step)
        return GPOResponse(
            rewards=[
                GPORewardModel(
                    p_safe=r.p_safe,
                    p_unsafe=r.p_unsafe,
                    self_bleu=r.diversity.self_bleu,
                    cosine=r.diversity.cosine,
                    defender=r.defender,
                    adversary=r.adversary,
                    ok=r.ok,
                )
                for r in rewards
            ]
        )

    # ---- routes (also callable by method name through a DeploymentHandle) -----------------------
    @api.post("/score")
    async def score(self, req: ScoreRequest) -> ScoreResponse:
        return await asyncio.to_thread(self._score, req)

    @api.post("/verdicts")
    async def verdicts(self, req: VerdictRequest) -> VerdictResponse:
        return await asyncio.to_thread(self._verdicts, req)

    @api.post("/preference")
    async def preference(self, req: PreferenceRequest) -> PreferenceResponse:
        return await asyncio.to_thread(self._preference, req)

    @api.post("/safety")
    async def safety(self, req: SafetyRequest) -> SafetyResponse:
        return await asyncio.to_thread(self._safety, req)

    @api.post("/gpo")
    async def gpo(self, req: GPORequest) -> GPOResponse:
        return await asyncio.to_thread(self._gpo, req)

    @api.get("/health")
    async def health(self) -> HealthResponse:
        return HealthResponse(backend=self.engine.backend, model=self.config.model, ready=True)

    @api.get("/metrics", response_class=PlainTextResponse)
    async def metrics(self) -> PlainTextResponse:
        from services.metrics import render

        return PlainTextResponse(render().decode())


def deployment_options(config: JudgeConfig) -> dict:
    """Serve options from the config: fractional CPUs, GPUs (SGLang: tp·dp), replicas or autoscaling."""
    s = config.serve
    actor = {"num_cpus": s.num_cpus, "num_gpus": config.replica_gpus()}
    opts: dict = {"name": s.name, "ray_actor_options": actor, "max_ongoing_requests": s.max_ongoing_requests}
    if s.autoscaling:
        opts["autoscaling_config"] = {
            "min_replicas": s.min_replicas,
            "max_replicas": s.max_replicas,
            "target_ongoing_requests": s.target_ongoing_requests,
            "upscale_delay_s": s.upscale_delay_s,
            "downscale_delay_s": s.downscale_delay_s,
        }
    else:
        opts["num_replicas"] = s.replicas
    return opts


def build_app(config: JudgeConfig):
    return JudgeDeployment.options(**deployment_options(config)).bind(config.model_dump())


def deploy(config: JudgeConfig, app_name: str = APP_NAME, route_prefix: str | None = None):
    """Start (or update) the judge app on the current Ray cluster; returns its DeploymentHandle."""
    return serve.run(build_app(config), name=app_name, route_prefix=route_prefix)
