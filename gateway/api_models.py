"""Request and response bodies of the gateway's REST API (beyond the shared JobSpec/JobRecord contracts)."""

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
