"""Job routes: submit, list, get, cancel, events (server-sent events), metrics (reward curve).

Each operation has a fixed operationId, and its success response links to what can follow it (a submitted
job's id to the operations on that job), so clients and schemathesis' state machine can chain them."""

from __future__ import annotations

import asyncio
import re
import time

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from gateway import metrics
from gateway.api_models import JOB_ID, ErrorResponse, JobList, MetricsCurve, job_links, link, links, printable
from gateway.app import ERRORS, Gateway, gateway, principal, visible_job
from gateway.auth import ApiKey
from gateway.settings import Sandbox
from gateway.store import JobUnreadable, TenantQuotaExceeded, UnreadableRecord
from gateway.validation import validate_job
from services.jobs import REWARD_METRIC, CheckpointEvent, JobRecord, JobState, StepEvent, read_events
from services.jobspec import JobSpec, JobSpecError
from services.limits import DocLimits

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
# documented on the parameters, checked in the route (with a message saying what an id looks like); empty
# means none, as before
EVENT_ID = {"pattern": r"^([0-9]{1,20}-[0-9]{1,20})?$", "examples": ["1712345678901-0"]}
U64 = 2**64 - 1


def stream_id_ok(eid: str) -> bool:
    """A Redis stream id `<ms>-<seq>` whose parts fit in 64 bits (Redis refuses larger ones mid-stream)."""
    return bool(STREAM_ID.match(eid)) and all(int(part) <= U64 for part in eid.split("-"))


SSE_POLL_S = 0.25
SSE_HEARTBEAT_S = 15.0

_SPEC_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}},
            # the YAML document is a JobSpec too (a "string" schema made clients send one quoted scalar)
            "application/yaml": {"schema": {"$ref": "#/components/schemas/JobSpec"}},
        },
    }
}


@router.post(
    "",
    status_code=201,
    response_model=JobRecord,
    operation_id="submit_job",
    openapi_extra=_SPEC_BODY,
    responses={
        **ERRORS,
        201: links(
            "The job, queued (its URL in Location).",
            **job_links(),
            ListTenantJobs=link(
                "list_jobs", "The jobs of the job's tenant.", {"tenant": "$response.body#/tenant"}
            ),
        ),
        413: {"model": ErrorResponse},
    },
)
async def submit_job(request: Request, gw: Gateway = Depends(gateway), who: ApiKey = Depends(principal)):
    """Submit a job (a JobSpec as JSON or YAML). It is validated in full (document limits, schema, the
    tenant sandbox and quotas, model and data paths, environment, engine, cluster GPUs/CPUs) before
    anything is stored; a bad spec gets 422 with the field paths (413 over the spec size limit)."""
    body = await request.body()
    s = gw.settings
    sandbox = Sandbox.from_settings(s, owns=lambda job_id: gw.store.owned_by(job_id, who.tenant))

    def check() -> JobSpec:
        return validate_job(
            body,
            request.headers.get("content-type"),
            gw.cluster.get(),
            s.check_capacity,
            sandbox=sandbox,
            quota=s.quota,
            limits=DocLimits(max_bytes=s.max_spec_bytes),
        )

    try:
        spec = await run_in_threadpool(check)
        job = await run_in_threadpool(gw.store.create, who.tenant, spec, s.quota.max_jobs)
    except (JobSpecError, TenantQuotaExceeded) as e:
        metrics.REJECTED.inc()
        if isinstance(e, TenantQuotaExceeded):
            msg = f"{e}: wait for one to end or cancel one (quota PAYOFF_QUOTA_MAX_JOBS)"
            e = JobSpecError([{"loc": "", "msg": f"this tenant already has {msg}"}])
        errors = [{"loc": printable(err["loc"]), "msg": printable(err["msg"])} for err in e.errors]
        detail = printable(f"invalid job spec: {e}")
        return JSONResponse({"detail": detail, "errors": errors}, status_code=413 if e.too_large else 422)
    metrics.SUBMITTED.inc()
    return JSONResponse(
        job.model_dump(mode="json"), status_code=201, headers={"Location": f"/v1/jobs/{job.id}"}
    )


class JobListing(JobList):
    unreadable: list[UnreadableRecord] = Field(
        default_factory=list,
        description="Jobs of this page whose stored record cannot be read (they count in `total`); "
        "present only when there are any.",
    )


def _unreadable(gw: Gateway, who: ApiKey, e: JobUnreadable, status: int, detail: str) -> JSONResponse:
    """A job whose record does not load: its owner (or an admin) is told why; anyone else gets 404."""
    if not who.admin and not gw.store.owned_by(e.job_id, who.tenant):
        raise HTTPException(404, f"job {e.job_id!r} not found")
    errors = [{"loc": "", "msg": printable(e.reason)}]
    return JSONResponse({"detail": printable(detail), "errors": errors}, status_code=status)


@router.get(
    "",
    response_model=JobListing,
    operation_id="list_jobs",
    responses={
        **ERRORS,
        200: links("A page of jobs.", **job_links("$response.body#/jobs/0/id", "GetJob", "CancelJob")),
        403: {"model": ErrorResponse},
    },
)
def list_jobs(
    state: list[JobState] | None = Query(None, description="Only jobs in these states."),
    tenant: str | None = Query(None, max_length=63, description="Admin only: one tenant's jobs."),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=1_000_000),
    gw: Gateway = Depends(gateway),
    who: ApiKey = Depends(principal),
) -> JobListing:
    """Your tenant's jobs, newest first. An admin key lists every tenant's (or one, with `tenant`). A job
    whose stored record cannot be read is listed under `unreadable` with the reason."""
    if tenant is not None and not who.admin and tenant != who.tenant:
        raise HTTPException(403, "only an admin key can list another tenant's jobs")
    scope = tenant if tenant is not None else (None if who.admin else who.tenant)
    found = gw.store.listing(scope, state, limit, offset)
    page = JobListing(jobs=found.jobs, total=found.total, unreadable=found.unreadable)
    return JSONResponse(page.model_dump(mode="json", exclude=None if found.unreadable else {"unreadable"}))


@router.get(
    "/{job_id}",
    response_model=JobRecord,
    operation_id="get_job",
    responses={
        **ERRORS,
        200: links("The job.", **job_links(JOB_ID, "CancelJob", "JobMetrics")),
        500: {"model": ErrorResponse},
    },
)
def get_job(job_id: str, gw: Gateway = Depends(gateway), who: ApiKey = Depends(principal)) -> JobRecord:
    """One job: state, when it entered each state, the error that ended it, progress summary. 500 naming
    the job if its stored record cannot be read."""
    try:
        return visible_job(gw, who, job_id)
    except JobUnreadable as e:
        return _unreadable(gw, who, e, 500, str(e))


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=JobRecord,
    operation_id="cancel_job",
    responses={
        **ERRORS,
        202: links("The job, cancelled or being torn down.", **job_links(JOB_ID, "GetJob", "JobEvents")),
        409: {"model": ErrorResponse},
    },
)
def cancel_job(job_id: str, gw: Gateway = Depends(gateway), who: ApiKey = Depends(principal)) -> JobRecord:
    """Cancel a job: a queued job is cancelled at once; a starting or running one is torn down by the runner
    (watch its events for the `cancelled` status). 409 if it ended, or if its record cannot be read (the
    runner then fails it and stops what was started for it)."""
    try:
        job = visible_job(gw, who, job_id)
        if job.state.terminal:
            raise HTTPException(409, f"job {job_id!r} already {job.state.value}")
        return gw.store.request_cancel(job_id)
    except JobUnreadable as e:
        why = (
            f"job {job_id!r} cannot be cancelled: {e}; the runner fails it and stops what was started for it"
        )
        return _unreadable(gw, who, e, 409, why)


def _sse(eid: str, kind: str, data: str) -> str:
    return f"id: {eid}\nevent: {kind}\ndata: {data}\n\n"


@router.get(
    "/{job_id}/events",
    operation_id="job_events",
    responses={
        **ERRORS,
        200: {"content": {"text/event-stream": {}}, "description": "A stream of job events."},
    },
)
async def job_events(
    request: Request,
    job_id: str,
    after: str | None = Query(
        None, max_length=41, description="Resume after this event id.", json_schema_extra=EVENT_ID
    ),
    follow: bool = Query(True, description="Keep streaming until the job ends."),
    last_event_id: str | None = Header(None, max_length=41, json_schema_extra=EVENT_ID),
    gw: Gateway = Depends(gateway),
    who: ApiKey = Depends(principal),
):
    """Server-sent events: `status` (state changes), `step` (learner metrics), `checkpoint`, `log`; each with
    its stream id as the SSE id, so a client resumes with Last-Event-ID. Ends with an `end` event once the
    job has finished and every event was sent (or at once with follow=false)."""
    await run_in_threadpool(visible_job, gw, who, job_id)
    cursor = last_event_id or after or "0-0"
    if not stream_id_ok(cursor):
        raise HTTPException(
            422, f"event id {cursor!r} is not a stream id like '1712345678901-0' (two parts below 2^64)"
        )

    async def stream():
        nonlocal cursor
        yield ": connected\n\n"
        beat = time.monotonic()
        while True:
            try:
                job = await run_in_threadpool(gw.store.get, job_id, False)
            except JobUnreadable:  # its record broke mid-stream: send what there is, then end
                job = None
            finished = job is None or job.state.terminal
            rows = await run_in_threadpool(read_events, gw.r, job_id, cursor, 500)
            for eid, event in rows:
                cursor = eid
                yield _sse(eid, event.type, event.model_dump_json())
            if len(rows) == 500:
                continue
            if not follow or (finished and not rows):
                state = job.state.value if job else "unknown"
                yield _sse(cursor, "end", f'{{"job_id": "{job_id}", "state": "{state}"}}')
                return
            if time.monotonic() - beat > SSE_HEARTBEAT_S:
                beat = time.monotonic()
                yield ": keep-alive\n\n"
            if await request.is_disconnected():
                return
            await asyncio.sleep(SSE_POLL_S)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def reward_curve(gw: Gateway, job_id: str) -> MetricsCurve:
    steps: list[StepEvent] = []
    checkpoints: list[CheckpointEvent] = []
    cursor = "0-0"
    while True:
        rows = read_events(gw.r, job_id, cursor, 2000)
        for eid, event in rows:
            cursor = eid
            if isinstance(event, StepEvent):
                steps.append(event)
            elif isinstance(event, CheckpointEvent):
                checkpoints.append(event)
        if len(rows) < 2000:
            break
    names = sorted({k for s in steps for k in s.metrics})
    series = {n: [s.metrics.get(n) for s in steps] for n in names}
    return MetricsCurve(
        job_id=job_id,
        steps=[s.step for s in steps],
        reward=[s.metrics.get(REWARD_METRIC) for s in steps],
        metrics=series,
        checkpoints=checkpoints,
    )


@router.get("/{job_id}/metrics", response_model=MetricsCurve, operation_id="job_metrics", responses=ERRORS)
def job_metrics(
    job_id: str, gw: Gateway = Depends(gateway), who: ApiKey = Depends(principal)
) -> MetricsCurve:
    """The learner's step metrics as series (the reward curve under `reward`) and the checkpoints so far."""
    visible_job(gw, who, job_id)
    return reward_curve(gw, job_id)
