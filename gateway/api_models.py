"""Request and response bodies of the gateway's REST API (beyond the shared JobSpec/JobRecord contracts),
and `links`: the OpenAPI links between its operations (which response value feeds which request)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.jobs import CheckpointEvent, JobRecord


def _valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains an unpaired surrogate escape (not valid Unicode)") from None
    return text


def printable(text: str) -> str:
    """`text` with any unpaired surrogate escaped, so an error message about bad input can be sent."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


Text = Annotated[str, AfterValidator(_valid_unicode)]
"""A str that can be stored and echoed: JSON escapes like "\ud800" decode to text UTF-8 cannot encode."""


def links(description: str, **targets: dict) -> dict:
    """An OpenAPI response object with links, each `name={"operationId": ..., "parameters": {...}}` (values
    are runtime expressions such as `$response.body#/id`). Clients and stateful testers (schemathesis) follow
    them from this response to the next request."""
    return {"description": description, "links": targets}


def link(
    operation_id: str, description: str, parameters: dict | None = None, body: dict | None = None
) -> dict:
    """One link to `operation_id`: `parameters` by name (`header.x-name` for a header), `body` the request
    body's fields (schemathesis merges them into the body it generates)."""
    out: dict = {"operationId": operation_id, "description": description}
    if parameters:
        out["parameters"] = parameters
    if body:
        out["requestBody"] = body
    return out


JOB_ID = "$response.body#/id"
"""The job id in a JobRecord response."""


class FieldError(BaseModel):
    loc: str = Field(description="Dotted field path, e.g. 'rollout.window_tokens'; '' for the whole body.")
    msg: str


class ErrorResponse(BaseModel):
    detail: str
    errors: list[FieldError] = Field(default_factory=list)


class JobList(BaseModel):
    jobs: list[JobRecord]
    total: int = Field(description="Jobs matching the filter (the page holds at most `limit`).")


class MetricsCurve(BaseModel):
    """The learner's step metrics as series aligned on `steps` (None where a step lacks a metric)."""

    job_id: str
    steps: list[int]
    reward: list[float | None] = Field(description="The reward curve (the `reward_mean` step metric).")
    metrics: dict[str, list[float | None]]
    checkpoints: list[CheckpointEvent]


class ServeCheckpointRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    checkpoint: Text | None = Field(
        None, max_length=4096, description="One of the job's checkpoint paths; None: the latest."
    )


class ServedModel(BaseModel):
    job_id: str
    app: str
    checkpoint: str
    status: str


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    name: Text = Field("", max_length=200)
    admin: bool = False


class KeyCreated(BaseModel):
    key: str = Field(description="The API key. Shown once; only its hash is stored.")
    key_id: str
    tenant: str
    admin: bool


class WhoAmI(BaseModel):
    key_id: str
    tenant: str
    admin: bool


class Health(BaseModel):
    ok: bool


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str]
    runner: dict[str, str | float | bool | None]


JOB_OPERATIONS = (
    "GetJob",
    "CancelJob",
    "JobMetrics",
    "ServeCheckpoint",
    "UnserveCheckpoint",
    "ChatWithJob",
    "SteerJob",
)


def job_links(job_id: str = JOB_ID, *names: str) -> dict[str, dict]:
    """Links from a response naming a job (`job_id`: the expression for its id) to the operations on that
    job: those `names`, by default all but `JobEvents`, which only a response of a job that has ended or is
    ending should offer (a live job's stream, with follow=true, lasts as long as the job)."""
    p = {"job_id": job_id}
    every = {
        "GetJob": link("get_job", "The job's record.", p),
        "CancelJob": link("cancel_job", "Cancel the job.", p),
        "JobMetrics": link("job_metrics", "The job's reward curve and checkpoints.", p),
        "ServeCheckpoint": link("serve_checkpoint", "Serve the job's latest checkpoint.", p),
        "UnserveCheckpoint": link("unserve_checkpoint", "Stop serving the job's checkpoint.", p),
        "ChatWithJob": link(
            "chat_completions", "Chat with the job's model.", {"header.x-payoff-job": job_id}
        ),
        "SteerJob": link("steer", "Payoff-steered answer from the job's model.", body={"model": job_id}),
        "JobEvents": link("job_events", "The job's events, ending once all were sent.", p),
    }
    return {name: every[name] for name in names or JOB_OPERATIONS}
