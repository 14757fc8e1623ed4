"""Ray Serve deployment of rollout replicas: OpenAI-compatible chat, native token generation, episodes.

Each replica owns one engine and, when it belongs to a job, a WeightReceiver that applies the learner's
pushes between decode steps. A failed sync makes `check_health` fail, so Serve takes the replica out of
rotation and replaces it. A replica that (re)starts registers at version 0 and is caught up by the learner
(services/weights/catchup.py); until then its job requests wait and then get a retryable 503
(rollout/sync_gate.py), so no job token is generated behind the learner's weights.
Concurrent requests are batched into one engine call (`serve.batch`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from rollout import metrics as rollout_metrics
from rollout.chat import chat_prompt, choice
from rollout.engine import GenOutput, GenRequest, UpdateMode
from services import affinity
from services.internal_auth import require_internal
from services.jobs import judge_app_name
from services.jobspec import JobSpec
from services.rollout_api import (
    ChatCompletion,
    ChatRequest,
    ChatUsage,
    EpisodeRequest,
    EpisodeResult,
    SamplingParams,
    TrajectorySummary,
    WindowStepRequest,
    WindowStepResult,
)

log = logging.getLogger(__name__)


class RolloutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = "tiny-qwen3"
    engine: Literal["transformers", "vllm"] = "transformers"
    engine_options: dict[str, Any] = Field(default_factory=dict)
    replicas: int = Field(1, ge=1)
    cpus_per_replica: float = Field(0.5, gt=0)
    gpus_per_replica: float = Field(0.0, ge=0)
    learner_cores: int = Field(
        0, ge=0, description="The job's learner pool in cores (services/affinity.py keeps the pools apart)."
    )
    max_batch_size: int = Field(16, ge=1)
    batch_wait_s: float = Field(0.005, ge=0)
    job_id: str | None = Field(None, description="Join this job's weight pushes and trajectory queue.")
    redis_url: str | None = None
    update_mode: UpdateMode = "keep"
    judge_app: str | None = Field(None, description="Serve app name of the judge for games that need one.")
    sync_lag: int = Field(
        0, ge=0, description="Versions a job's replica may trail the learner (push_weights_every - 1)."
    )
    sync_wait_s: float = Field(
        30.0, ge=0, description="A job request waits this long for a replica behind the learner, then 503."
    )

    @classmethod
    def from_job(cls, job_id: str, spec: JobSpec, redis_url: str | None) -> RolloutConfig:
        """The config of a job's rollout app: the job's replicas, joined to its weight pushes, its
        trajectory queue and its judge."""
        return cls._of(
            spec,
            model=spec.model.path,
            replicas=spec.rollout.replicas,
            job_id=job_id,
            redis_url=redis_url,
            judge_app=judge_app_name(job_id),
            sync_lag=spec.learner.push_weights_every - 1,
            learner_cores=affinity.job_pools(spec)[1],
        )

    @classmethod
    def for_checkpoint(cls, spec: JobSpec, path: str) -> RolloutConfig:
        """One replica serving a checkpoint of a job outside the job (no weight pushes, no queue)."""
        return cls._of(spec, model=path, replicas=1)

    @classmethod
    def _of(cls, spec: JobSpec, **fields) -> RolloutConfig:
        r, options = spec.rollout, {"dtype": spec.model.dtype}
        options["kv_cache_on_update"] = spec.asynchrony.kv_cache_on_update
        if r.engine == "vllm":
            options["max_model_len"] = spec.model.max_model_len
        return cls(
            engine=r.engine,
            engine_options=options,
            cpus_per_replica=r.cpus_per_replica,
            gpus_per_replica=r.gpus_per_replica,
            **fields,
        )


# every HTTP route needs the internal token (services/internal_auth.py); handles bypass HTTP
api = FastAPI(title="payoff rollout replica", dependencies=[Depends(require_internal)])


@serve.deployment(health_check_period_s=2, health_check_timeout_s=30, graceful_shutdown_timeout_s=10)
@serve.ingress(api)
class RolloutReplica:
    def __init__(self, config: dict):
        from rollout.engine import make_engine

        self.cfg = RolloutConfig.model_validate(config)
        opts = dict(self.cfg.engine_options)
        if self.cfg.engine == "transformers" and self.cfg.gpus_per_replica == 0:
            c = self.cfg
            pinned = affinity.pin_replica(
                c.job_id, c.redis_url, c.cpus_per_replica, c.replicas, c.learner_cores
            )
            opts.setdefault("threads", pinned.threads)
        self.engine = make_engine(self.cfg.engine, self.cfg.model, **opts)
        ctx = serve.get_replica_context()
        rid = getattr(getattr(ctx, "replica_id", None), "unique_id", None) or uuid.uuid4().hex[:8]
        self.replica_id = f"{ctx.deployment}-{rid}"
        self.receiver = self.queue = self.gate = None
        if self.cfg.job_id and self.cfg.redis_url:
            from rollout.sync_gate import SyncGate
            from services.config import data_plane_client
            from services.queue import TrajectoryQueue
            from services.weights import WeightReceiver

            client = data_plane_client(self.cfg.redis_url)
            self.queue = TrajectoryQueue(client, self.cfg.job_id)
            # no job request is generated behind the learner's weights (a restarted replica is re-synced)
            self.gate = SyncGate(
                lambda: self.engine.version,
                self.queue.learner_version,
                self.cfg.sync_lag,
                self.cfg.sync_wait_s,
            )
            device = getattr(self.engine, "device", "cpu")
            self.receiver = WeightReceiver(
                client,
                self.cfg.job_id,
                self.replica_id,
                device=device,
                version=self.engine.version,
                apply=lambda named, v: self.engine.load_weights(named, v, self.cfg.update_mode),
            ).start()
        self._windows: dict[str, object] = {}  # T-PPO rollouts by task, each with its active sequences
        # one window step at a time on this replica, whatever its task: a sequence is never in two steps,
        # a pipelined second call waits here, and busy_s never counts two overlapping steps
        self._step_lock = asyncio.Lock()
        self.scorer = None  # judge rewards for games that need them (connects to the judge on first use)
        if self.cfg.judge_app:
            from rollout.judging import JudgeScorer

            self.scorer = JudgeScorer(self.cfg.judge_app)
        self._generate_batch.set_max_batch_size(self.cfg.max_batch_size)
        self._generate_batch.set_batch_wait_timeout_s(self.cfg.batch_wait_s)

    # ------------------------------------------------------------------ batching
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _generate_batch(self, requests: list[GenRequest]) -> list[GenOutput]:
        t0 = time.perf_counter()
        outs = await asyncio.to_thread(self.engine.generate, requests)
        rollout_metrics.observe_batch(
            self.cfg.job_id or "adhoc",
            self.replica_id,
            outs,
            sum(len(r.prompt_ids) for r in requests),
            time.perf_counter() - t0,
            self.engine.version,
        )
        return outs

    async def generate(self, request: GenRequest) -> GenOutput:
        """Native token-level generation (DeploymentHandle callers; chat goes through here too)."""
        await self._synced()
        return await self._generate_batch(request)

    async def _synced(self) -> None:
        """A job's replica serves only at the learner's policy: wait for the sync, else 503 (sync_gate.py)."""
        if self.gate is not None:
            await self.gate.wait()

    # ------------------------------------------------------------------ HTTP
    @api.post("/v1/generate")
    async def generate_http(self, request: GenRequest) -> GenOutput:
        return await self.generate(request)

    @api.post("/v1/chat/completions", response_model_exclude_none=True)
    async def chat_completions(self, req: ChatRequest) -> ChatCompletion:
        prompt, max_tokens = chat_prompt(self.engine, req)
        params = [
            SamplingParams(
                max_tokens=max_tokens,
                temperature=req.temperature,
                top_p=req.top_p,
                seed=None if req.seed is None else req.seed + i,
            )
            for i in range(req.n)
        ]
        outs = await asyncio.gather(*[self.generate(GenRequest(prompt_ids=prompt, params=p)) for p in params])
        choices = [choice(self.engine.tokenizer, i, o, req) for i, o in enumerate(outs)]
        completion = sum(len(o.token_ids) for o in outs)
        usage = ChatUsage(
            prompt_tokens=len(prompt),
            completion_tokens=completion,
            total_tokens=len(prompt) * req.n + completion,
        )
        return ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex[:12]}",
            created=int(time.time()),
            model=req.model or self.cfg.model,
            choices=choices,
            usage=usage,
            policy_versions=[sorted(set(o.versions)) for o in outs],
        )

    @api.post("/v1/episodes")
    async def episodes(self, req: EpisodeRequest) -> EpisodeResult:
        from rollout.episodes import EpisodeRunner

        if req.enqueue and self.queue is None:
            raise HTTPException(409, "this replica belongs to no job: enqueue needs job_id and redis_url")
        make = self._env_factory(req.env, req.data, req.options)
        t_in = time.perf_counter()
        await self._synced()
        runner = EpisodeRunner(
            self.engine,
            make,
            self.cfg.job_id or "adhoc",
            req.env,
            req.sampling,
            max_turns=req.max_turns,
            scorer=self.scorer,
            lengths=req.lengths,
        )
        t0 = time.perf_counter()
        eps, trajs = await asyncio.to_thread(runner.run_group, req.seed, req.group_size)
        busy = time.perf_counter() - t0
        account = {"sync_wait": t0 - t_in, "episodes": busy}  # episodes: engine, game and judge
        rollout_metrics.observe_generation(
            self.cfg.job_id or "adhoc",
            self.replica_id,
            len(trajs),
            sum(t.num_generated for t in trajs),
            sum(t.prompt_len for t in trajs),
            busy,
            self.engine.version,
        )
        rollout_metrics.EPISODES.labels(self.cfg.job_id or "adhoc", self.replica_id, req.env).inc(len(eps))
        t_put = time.perf_counter()
        ids = await asyncio.to_thread(self.queue.put_many, trajs) if req.enqueue else []
        account["put"] = time.perf_counter() - t_put
        rollout_metrics.observe_call(self.cfg.job_id or "adhoc", self.replica_id, account)
        summaries = [
            TrajectorySummary(
                id=t.id,
                role=t.role,
                tokens=len(t.token_ids),
                generated=t.num_generated,
                reward=t.reward,
                versions=sorted(set(t.versions.tolist()) - {-1}),
            )
            for t in trajs
        ]
        return EpisodeResult(
            episodes=eps,
            trajectories=summaries,
            enqueued=[i for i in ids if i],
            busy_s=busy,
            account=account,
            replica=self.replica_id,
        )

    @api.post("/v1/tppo/step")
    async def tppo_step(self, req: WindowStepRequest) -> WindowStepResult:
        """Advance this replica's windowed rollout for the task by one window and enqueue its segments.
        The rollout (its active, unfinished sequences) lives on the replica between calls."""
        import json

        from rollout.tppo import WindowedRollout

        if req.enqueue and self.queue is None:
            raise HTTPException(409, "this replica belongs to no job: enqueue needs job_id and redis_url")
        if req.window > req.max_response_tokens:
            raise HTTPException(
                422, f"window ({req.window}) is larger than max_response_tokens ({req.max_response_tokens})"
            )
        key = json.dumps(
            [
                req.env,
                req.data,
                req.options,
                req.batch_size,
                req.group_size,
                req.window,
                req.max_response_tokens,
                req.sampling.model_dump(),
                req.lengths and req.lengths.model_dump(),
            ],
            sort_keys=True,
        )
        if key not in self._windows:
            self._windows[key] = WindowedRollout(
                self.engine,
                self._env_factory(req.env, req.data, req.options),
                self.cfg.job_id or "adhoc",
                req.env,
                req.batch_size,
                req.group_size,
                req.window,
                req.max_response_tokens,
                req.sampling,
                first_seed=req.first_seed,
                scorer=self.scorer,
                lengths=req.lengths,
            )
        rollout = self._windows[key]
        t_in = time.perf_counter()
        await self._synced()
        t_synced = time.perf_counter()
        async with self._step_lock:
            t0 = time.perf_counter()
            segments = await asyncio.to_thread(rollout.step)
            busy = time.perf_counter() - t0
            rewards = list(rollout.last_rewards)
            account = dict(rollout.last_account, sync_wait=t_synced - t_in, queued=t0 - t_synced)
        tokens = int(sum(int(t.loss_mask.sum()) for t in segments))
        rollout_metrics.observe_generation(
            self.cfg.job_id or "adhoc",
            self.replica_id,
            len(segments),
            tokens,
            sum(t.prompt_len for t in segments),
            busy,
            self.engine.version,
        )
        t_put = time.perf_counter()
        ids = await asyncio.to_thread(self.queue.put_many, segments) if req.enqueue else []
        account["put"] = time.perf_counter() - t_put
        rollout_metrics.observe_call(self.cfg.job_id or "adhoc", self.replica_id, account)
        return WindowStepResult(
            segments=len(segments),
            finished=sum(t.finished for t in segments),
            tokens=tokens,
            rewards=rewards,
            enqueued=len([i for i in ids if i]),
            busy_s=busy,
            account=account,
            replica=self.replica_id,
            version=self.engine.version,
        )

    def _env_factory(self, env: str, data: str | None, options: dict):
        from games.registry import ENVS, make_env

        if env not in ENVS:
            raise HTTPException(422, f"unknown env {env!r}; choose from {', '.join(ENVS)}")
        try:
            make_env(env, data, options)  # fail the request, not the rollout, on bad options or data
        except (ValueError, FileNotFoundError) as e:
            raise HTTPException(422, f"cannot build env {env!r}: {e}") from None
        return lambda: make_env(env, data, options)

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {
            "ok": self.receiver is None or self.receiver.healthy,
            "replica": self.replica_id,
            "version": self.engine.version,
            "engine": self.engine.name,
            "pid": os.getpid(),
            "synced": None if self.gate is None else self.gate.synced,  # at the learner's policy?
        }

    @api.get("/metrics", response_class=PlainTextResponse)
    async def metrics(self) -> PlainTextResponse:
        from services.metrics import render

        return PlainTextResponse(render().decode())

    @api.get("/v1/version")
    async def version(self) -> dict:
        return {"version": self.engine.version, "replica": self.replica_id}

    def check_health(self) -> None:
        if self.receiver is not None and not self.receiver.healthy:
            raise RuntimeError(f"weight sync failed: {self.receiver.last_error}")

    def __del__(self):
        for part in (getattr(self, "receiver", None), getattr(self, "engine", None)):
            try:
                if part is not None:
                    part.stop() if hasattr(part, "stop") else part.close()
            except Exception:  # shutting down: never raise from a finaliser
                pass


def build_app(config: RolloutConfig):
    """The Serve application for N replicas with the configured resources."""
    return RolloutReplica.options(
        num_replicas=config.replicas,
        ray_actor_options={"num_cpus": config.cpus_per_replica, "num_gpus": config.gpus_per_replica},
        max_ongoing_requests=max(32, 2 * config.max_batch_size),
    ).bind(config.model_dump())
