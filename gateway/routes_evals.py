"""Evaluation routes: `POST /v1/evals` runs `payoff eval` on the cluster; list, get, report, cancel, events.

The gateway validates the EvalSpec in full before storing it (schema with field paths; every local model
inside the tenant's sandbox; a `job` model must be one of the tenant's jobs with a checkpoint; endpoint
and judge URLs only to allowed hosts), then hands it to the registered evaluator launcher
(payoff/eval_actor.py, imported by module name like the job components). It never imports the evaluator.
Another tenant's evaluation is 'not found', exactly like a missing one.
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from gateway.api_models import printable
from gateway.app import ERRORS, Gateway, gateway, principal
from gateway.auth import ApiKey
from gateway.routes_jobs import SSE_HEARTBEAT_S, SSE_POLL_S, stream_id_ok
from gateway.settings import Sandbox
from gateway.validation import is_local_model, judge_errors, key_env_problem, model_problem, url_problem
from services.eval_store import EvalStore
from services.evals import EvalRecord, EvalReport, EvalSpec, evaluator
from services.jobs import JobState
from services.jobspec import JobSpecError
from services.limits import DocLimits

router = APIRouter(prefix="/v1/evals", tags=["evals"])
MAX_ACTIVE_EVALS = 4  # per tenant: queued + running


def _store(gw: Gateway) -> EvalStore:
    return EvalStore(gw.r)


def _model_errors(gw: Gateway, who: ApiKey, spec: EvalSpec, sandbox: Sandbox) -> list[dict]:
    errors = []
    for i, m in enumerate(spec.models):
        loc = f"models.{i}"
        if m.path and (msg := model_problem(m.path, sandbox)):
            errors.append({"loc": f"{loc}.path", "msg": msg})
        if m.path and not msg and is_local_model(m.path):
            m.path = sandbox.absolute(m.path)  # every process opens the directory that was checked
        if m.job:
            job = gw.store.get(m.job)
            if job is None or (job.tenant != who.tenant and not who.admin):
                errors.append({"loc": f"{loc}.job", "msg": f"job {m.job!r} not found"})
            elif not job.summary.last_checkpoint:
                errors.append({"loc": f"{loc}.job", "msg": f"job {m.job!r} has no checkpoint yet"})
        if m.url and (msg := url_problem(m.url, sandbox.judge_hosts, "model endpoint", f"{loc}.api_key_env")):
            errors.append({"loc": f"{loc}.url", "msg": msg})
        if msg := key_env_problem(m.api_key_env, sandbox, "model"):
            errors.append({"loc": f"{loc}.api_key_env", "msg": msg})
    return errors


def _check(gw: Gateway, who: ApiKey, body: bytes) -> EvalSpec:
    s = gw.settings
    spec = EvalSpec.from_text(body.decode("utf-8", "replace"), DocLimits(max_bytes=s.max_spec_bytes))
    sandbox = Sandbox.from_settings(s, owns=lambda job_id: gw.store.owned_by(job_id, who.tenant))
    errors = _model_errors(gw, who, spec, sandbox) + judge_errors(spec, sandbox)
    active = [e for e in _store(gw).list(who.tenant, 200) if not e.state.terminal]
    if len(active) >= MAX_ACTIVE_EVALS:
        errors.append({"loc": "", "msg": f"this tenant already has {len(active)} unfinished evaluations"})
    if errors:
        raise JobSpecError(errors)
    return spec


@router.post("", status_code=201, response_model=EvalRecord, operation_id="submit_eval", responses=ERRORS)
async def submit_eval(request: Request, gw: Gateway = Depends(gateway), who: ApiKey = Depends(principal)):
    """Evaluate one model, or two side by side, on GTAlign test sets (an EvalSpec as JSON or YAML). 422
    with field paths for a spec that cannot run; 503 when no evaluator is installed."""
    body = await request.body()
    try:
        spec = await run_in_threadpool(_check, gw, who, body)
    except JobSpecError as e:
        errors = [{"loc": printable(err["loc"]), "msg": printable(err["msg"])} for err in e.errors]
        detail = printable(f"invalid eval spec: {e}")
        return JSONResponse({"detail": detail, "errors": errors}, status_code=413 if e.too_large else 422)
    launcher = evaluator()
    if launcher is None:
        raise HTTPException(503, "no evaluator on this gateway (component module payoff.eval_actor missing)")
    rec = await run_in_threadpool(_store(gw).create, who.tenant, spec)
    try:
        await run_in_threadpool(launcher.start, rec, gw.settings.redis_url)
    except Exception as e:
        rec = await run_in_threadpool(
            _store(gw).transition, rec.id, JobState.FAILED, f"the evaluator did not start: {e}"
        )
    return JSONResponse(
        rec.model_dump(mode="json"), status_code=201, headers={"Location": f"/v1/evals/{rec.id}"}
    )


def visible_eval(gw: Gateway, who: ApiKey, eval_id: str) -> EvalRecord:
    rec = _store(gw).get(eval_id)
    if rec is None or (rec.tenant != who.tenant and not who.admin):
        raise HTTPException(404, f"evaluation {eval_id!r} not found")
    return rec


@router.get("", response_model=list[EvalRecord], operation_id="list_evals", responses=ERRORS)
def list_evals(
    limit: int = Query(50, ge=1, le=500), gw: Gateway = Depends(gateway), who: ApiKey = Depends(principal)
) -> list[EvalRecord]:
    """The caller's evaluations, newest first (an admin sees every tenant's)."""
    return _store(gw).list(None if who.admin else who.tenant, limit)


@router.get("/{eval_id}", response_model=EvalRecord, operation_id="get_eval", responses=ERRORS)
def get_eval(eval_id: str, gw: Gateway = Depends(gateway), who: ApiKey = Depends(principal)) -> EvalRecord:
    """State, progress and, once succeeded, the per-model metrics and the comparison."""
    return visible_eval(gw, who, eval_id)


@router.get("/{eval_id}/report", response_model=EvalReport, operation_id="eval_report", responses=ERRORS)
def eval_report(eval_id: str, gw: Gateway = Depends(gateway), who: ApiKey = Depends(principal)) -> EvalReport:
    """The full report with per-sample welfare (409 until the evaluation has succeeded)."""
    rec = visible_eval(gw, who, eval_id)
    report = _store(gw).report(eval_id)
    if report is None:
        raise HTTPException(409, f"evaluation {eval_id} has no report ({rec.state.value})")
    return report


@router.post("/{eval_id}/cancel", response_model=EvalRecord, operation_id="cancel_eval", responses=ERRORS)
def cancel_eval(eval_id: str, gw: Gateway = Depends(gateway), who: ApiKey = Depends(principal)) -> EvalRecord:
    """A queued evaluation is cancelled at once; a running one stops after its current batch."""
    visible_eval(gw, who, eval_id)
    rec = _store(gw).request_cancel(eval_id)
    launcher = evaluator()
    if rec.state == JobState.CANCELLED and launcher is not None:
        launcher.stop(eval_id)  # a pending actor would otherwise start and find the record cancelled
    return rec


@router.get("/{eval_id}/events", operation_id="eval_events", responses=ERRORS)
async def eval_events(
    request: Request,
    eval_id: str,
    after: str | None = Query(None, max_length=41, description="Resume after this event id."),
    follow: bool = Query(True, description="Keep streaming until the evaluation ends."),
    gw: Gateway = Depends(gateway),
    who: ApiKey = Depends(principal),
):
    """Server-sent events: `status`, `progress` (done / total, model, data source), `log`; ends with `end`."""
    await run_in_threadpool(visible_eval, gw, who, eval_id)
    cursor = after or "0-0"
    if not stream_id_ok(cursor):
        raise HTTPException(422, f"event id {cursor!r} is not a stream id like '1712345678901-0'")
    store = _store(gw)

    async def stream():
        nonlocal cursor
        yield ": connected\n\n"
        beat = time.monotonic()
        while True:
            rec = await run_in_threadpool(store.get, eval_id)
            rows = await run_in_threadpool(store.events, eval_id, cursor, 500)
            for eid, event in rows:
                cursor = eid
                yield f"id: {eid}\nevent: {event.get('type', 'log')}\ndata: {printable(json.dumps(event))}\n\n"
            if len(rows) == 500:
                continue
            if not follow or ((rec is None or rec.state.terminal) and not rows):
                state = rec.state.value if rec else "unknown"
                yield f'id: {cursor}\nevent: end\ndata: {{"eval_id": "{eval_id}", "state": "{state}"}}\n\n'
                return
            if time.monotonic() - beat > SSE_HEARTBEAT_S:
                beat = time.monotonic()
                yield ": keep-alive\n\n"
            if await request.is_disconnected():
                return
            await asyncio.sleep(SSE_POLL_S)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
