"""Inference routes: OpenAI-compatible chat with a job's model, payoff steering, serving a checkpoint.

A job's model answers from its rollout replicas while the job runs, or from a served checkpoint
(`POST /v1/jobs/{id}/serve`) once it has one. Requests go to the Serve app through a DeploymentHandle,
not over HTTP.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Header, HTTPException
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from gateway.api_models import ErrorResponse, ServeCheckpointRequest, ServedModel, job_links, links
from gateway.app import ERRORS, Gateway, gateway, principal, visible_job
from gateway.auth import ApiKey
from gateway.steer import SteerRequest, SteerResponse, steer
from services.jobs import CheckpointEvent, JobRecord, JobState, read_events, rollout_app_name, served_app_name
from services.rollout_api import ChatMessage, ChatRequest, RolloutCallError, RolloutClient

router = APIRouter(tags=["inference"])
UPSTREAM = {409: {"model": ErrorResponse}, 502: {"model": ErrorResponse}}


ANSWERING = ("RUNNING", "UNHEALTHY")


def _ray_joined() -> bool:
    """Whether this process is connected to Ray. Ray Serve's API would otherwise start a local Ray
    instance inside the gateway, so without Ray the gateway serves no model."""
    import ray

    return ray.is_initialized()


def _serve_apps() -> dict[str, str]:
    """Serve application name → status; empty in a gateway without Ray (it serves no model)."""
    from ray import serve

    if not _ray_joined():
        return {}
    return {
        name: str(getattr(a.status, "value", a.status)) for name, a in serve.status().applications.items()
    }


def answering_app(job: JobRecord, apps: dict[str, str]) -> str | None:
    """The Serve app that answers for a job (its rollout replicas while running, else a served
    checkpoint), given the apps' statuses; None when neither answers."""
    if job.state == JobState.RUNNING and apps.get(rollout_app_name(job.id)) in ANSWERING:
        return rollout_app_name(job.id)
    if apps.get(served_app_name(job.id)) in ANSWERING:
        return served_app_name(job.id)
    return None


def chat_target(job: JobRecord) -> str:
    """The app that answers for a job, or 409 saying why none does (one Serve status read)."""
    app = answering_app(job, _serve_apps())
    if app is None:
        raise HTTPException(
            409,
            f"job {job.id!r} is {job.state.value}: its rollout replicas are not running and "
            f"no checkpoint is served (POST /v1/jobs/{job.id}/serve serves the latest one)",
        )
    return app


async def call_chat(gw: Gateway, job: JobRecord, req: ChatRequest, typed: bool = False):
    app_name = await run_in_threadpool(chat_target, job)
    handle = await run_in_threadpool(gw.app_handle, app_name)
    try:
        out = await RolloutClient(app_name, handle).chat(req)
    except RolloutCallError as e:
        if e.status is not None and 400 <= e.status < 500:
            raise HTTPException(e.status, e.detail) from None
        if e.status == 503:  # the replica is catching up with the learner's weights: retry shortly
            raise HTTPException(503, e.detail, headers={"Retry-After": "5"}) from None
        raise HTTPException(
            502 if e.status != 504 else 504, f"the model of job {job.id!r} failed to answer: {e}"
        ) from None
    out.model = job.id
    return out if typed else out.to_openai()


@router.post(
    "/v1/chat/completions",
    operation_id="chat_completions",
    responses={**ERRORS, **UPSTREAM, 200: {"content": {"application/json": {}, "text/event-stream": {}}}},
)
async def chat_completions(
    req: ChatRequest,
    x_payoff_job: str | None = Header(None, max_length=200, description="The job id (else `model`)."),
    gw: Gateway = Depends(gateway),
    who: ApiKey = Depends(principal),
):
    """OpenAI-compatible chat completion from a job's model: put the job id in `model` (or X-Payoff-Job).
    `stream: true` answers with server-sent `chat.completion.chunk` events ending in `data: [DONE]`, as the
    OpenAI API does; the chunks are sent once the completion is generated (no token-by-token streaming
    yet). Fields this endpoint does not implement are refused with a 400 naming them."""
    if req.unsupported():
        raise HTTPException(
            400, f"not supported by payoff's chat endpoint: {', '.join(req.unsupported())} (remove them)"
        )
    job_id = x_payoff_job or req.model
    if not job_id:
        raise HTTPException(422, "name the job: set `model` to the job id (or send X-Payoff-Job)")
    job = await run_in_threadpool(visible_job, gw, who, job_id)
    if not req.stream:
        return await call_chat(gw, job, req)
    out = await call_chat(
        gw, job, req.model_copy(update={"stream": False, "stream_options": None}), typed=True
    )
    usage = bool(req.stream_options and req.stream_options.include_usage)
    events = [f"data: {json.dumps(chunk)}\n\n" for chunk in out.chunks(include_usage=usage)]
    return StreamingResponse(iter(events + ["data: [DONE]\n\n"]), media_type="text/event-stream")


@router.get("/v1/models", operation_id="list_models", responses=ERRORS)
def list_models(gw: Gateway = Depends(gateway), who: ApiKey = Depends(principal)) -> dict:
    """OpenAI's model list: the caller's jobs that can answer chat now (rollout replicas running, or a
    served checkpoint). The model id is the job id."""
    apps = _serve_apps()
    jobs, _ = gw.store.list(None if who.admin else who.tenant, [JobState.RUNNING], 500, 0)
    ended, _ = gw.store.list(None if who.admin else who.tenant, [JobState.SUCCEEDED, JobState.FAILED], 500, 0)
    data = []
    for job in jobs + ended:
        app = answering_app(job, apps)
        if app is not None:
            source = "rollout" if app == rollout_app_name(job.id) else "checkpoint"
            data.append(
                {
                    "id": job.id,
                    "object": "model",
                    "created": int(job.created_at),
                    "owned_by": job.tenant,
                    "source": source,
                }
            )
    return {"object": "list", "data": data}


@router.post(
    "/v1/steer", response_model=SteerResponse, operation_id="steer", responses={**ERRORS, **UPSTREAM}
)
async def steer_route(
    req: SteerRequest, gw: Gateway = Depends(gateway), who: ApiKey = Depends(principal)
) -> SteerResponse:
    """GTAlign payoff steering (spec §1.8): stage 1 elicits the model's payoff matrix, the matrix is shifted
    by `scale_llm` / `scale_user`, the action with the best LLM·user product is chosen, and stage 2 asks
    the model to carry out that action. `ok` is false when the model's payoff block does not parse."""
    job = await run_in_threadpool(visible_job, gw, who, req.model)

    async def chat(
        messages: list[dict[str, str]], max_tokens: int, temperature: float, seed: int | None
    ) -> dict:
        request = ChatRequest(
            model=job.id,
            messages=[ChatMessage(**m) for m in messages],
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
        )
        return await call_chat(gw, job, request)

    return await steer(req, chat)


def _checkpoints(gw: Gateway, job_id: str) -> list[CheckpointEvent]:
    out, cursor = [], "0-0"
    while True:
        rows = read_events(gw.r, job_id, cursor, 2000)
        out += [e for _, e in rows if isinstance(e, CheckpointEvent)]
        if len(rows) < 2000:
            return out
        cursor = rows[-1][0]


@router.post(
    "/v1/jobs/{job_id}/serve",
    status_code=202,
    response_model=ServedModel,
    tags=["jobs"],
    operation_id="serve_checkpoint",
    responses={
        **ERRORS,
        202: links(
            "The app serving the checkpoint.",
            **job_links("$response.body#/job_id", "GetJob", "ChatWithJob", "SteerJob", "UnserveCheckpoint"),
        ),
        409: {"model": ErrorResponse},
    },
)
def serve_checkpoint(
    job_id: str,
    req: ServeCheckpointRequest | None = None,
    gw: Gateway = Depends(gateway),
    who: ApiKey = Depends(principal),
) -> ServedModel:
    """Serve one of the job's checkpoints (default: the latest) for chat and steering, with one replica of
    the job's engine. Only paths the job's learner reported as checkpoints can be served; 503 from a
    gateway that is not connected to Ray."""
    from services.serve_apps import app_status, serve_checkpoint

    job = visible_job(gw, who, job_id)
    known = [c.path for c in _checkpoints(gw, job_id)]
    if not known:
        raise HTTPException(409, f"job {job_id!r} has no checkpoint yet")
    path = (req.checkpoint if req and req.checkpoint else None) or known[-1]
    if path not in known:
        raise HTTPException(404, f"checkpoint {path!r} is not one of job {job_id!r}'s checkpoints")
    if not _ray_joined():
        raise HTTPException(503, "this gateway is not connected to Ray, so it cannot serve a checkpoint")
    app_name = serve_checkpoint(job, path)
    return ServedModel(job_id=job_id, app=app_name, checkpoint=path, status=app_status(app_name).state)


@router.delete(
    "/v1/jobs/{job_id}/serve",
    status_code=204,
    tags=["jobs"],
    operation_id="unserve_checkpoint",
    responses=ERRORS,
)
def unserve_checkpoint(job_id: str, gw: Gateway = Depends(gateway), who: ApiKey = Depends(principal)) -> None:
    """Stop serving the job's checkpoint (nothing happens if none is served, nor in a gateway without Ray)."""
    from services.serve_apps import delete

    visible_job(gw, who, job_id)
    if _ray_joined():  # without Ray nothing is served
        delete(served_app_name(job_id))
