"""Data contracts between rollout, judge and learner: Turn, Episode, Trajectory, WeightVersion.

An Episode is the text-level record of one game (what a person reads); a Trajectory is the token-level
training record the learner consumes. Per-token arrays all have the same length as `token_ids`, so the
learner never has to guess which token a logprob, version or reward belongs to.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)

Scalar = str | int | float | bool | None
FinishReason = Literal["stop", "length", "window", "abort"]
# stop: EOS inside the budget; length: reached L_max (finished for good);
# window: T-PPO window ended, the sequence continues in a later segment; abort: generation was cancelled.
NOT_GENERATED = -1  # version tag of tokens no policy produced (prompt, environment observations)


def _array(dtype: str, json_type: str):
    """A per-token numpy array field: accepts lists or arrays, serialises to a list in JSON.

    numpy (not lists) because trajectories are long: validation, (de)serialisation and the learner's
    torch.from_numpy are all vectorised instead of a Python loop per token. The in-memory dtypes equal
    the wire dtypes (services/codec.py), so decoding converts nothing.
    """
    target = np.dtype(dtype)

    def validate(v: Any) -> np.ndarray:
        arr = v if isinstance(v, np.ndarray) else np.asarray(v)
        if arr.dtype == target:
            if arr.ndim != 1:
                raise ValueError(f"expected a flat list, got shape {arr.shape}")
            return arr
        if arr.ndim != 1:
            raise ValueError(f"expected a flat list, got shape {arr.shape}")
        if arr.size == 0:
            return arr.astype(target)
        if target.kind in "iu":
            if arr.dtype.kind not in "iub":
                raise ValueError(f"expected integers, got {arr.dtype}")
            info = np.iinfo(target)
            if arr.min() < info.min or arr.max() > info.max:
                raise ValueError(f"values outside [{info.min}, {info.max}]")
        elif arr.dtype.kind not in "iufb":
            raise ValueError(f"expected numbers, got {arr.dtype}")
        return arr.astype(target)

    return Annotated[
        np.ndarray,
        PlainValidator(validate),
        PlainSerializer(lambda a: a.tolist(), when_used="json"),
        WithJsonSchema({"type": "array", "items": {"type": json_type}}),
    ]


IntArray = _array("<i4", "integer")  # token ids, versions
ByteArray = _array("|u1", "integer")  # loss mask, role ids
FloatArray = _array("<f4", "number")  # logprobs, rewards
PER_TOKEN = ("token_ids", "logprobs", "versions", "loss_mask", "rewards", "role_ids")


def new_id() -> str:
    return uuid.uuid4().hex


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Turn(_Contract):
    role: str = Field(min_length=1)
    content: str
    token_start: int | None = Field(None, ge=0)
    token_end: int | None = Field(None, ge=0)
    version: int | None = Field(None, ge=NOT_GENERATED, description="Policy version that wrote it.")
    reward: float = 0.0
    info: dict[str, Scalar] = Field(default_factory=dict)


class Episode(_Contract):
    id: str = Field(default_factory=new_id)
    job_id: str
    env: str
    seed: int
    group_id: str = Field(description="Episodes sharing a seed/prompt (GRPO/GRL group).")
    turns: list[Turn] = Field(default_factory=list)
    rewards: dict[str, float] = Field(default_factory=dict, description="Total reward per role.")
    done: bool = False
    success: bool | None = None
    data_source: str | None = None
    ground_truth: str | None = None
    info: dict[str, Scalar] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)


class Trajectory(_Contract):
    id: str = Field(default_factory=new_id, min_length=1, max_length=64)
    job_id: str = Field(min_length=1)
    episode_id: str = Field(min_length=1)
    group_id: str = Field(min_length=1)
    segment: int = Field(0, ge=0, description="T-PPO window index of this sequence.")
    role: str = Field("policy", min_length=1, description="Role this record trains (multi-role games).")
    env: str = ""
    data_source: str | None = None
    token_ids: IntArray
    logprobs: FloatArray
    versions: IntArray
    loss_mask: ByteArray
    rewards: FloatArray
    role_ids: ByteArray = Field(
        default_factory=lambda: np.zeros(0, np.uint8),
        description="Per-token index into `roles`; empty means all role 0.",
    )
    roles: list[str] = Field(default_factory=lambda: ["policy"])
    prompt_len: int = Field(0, ge=0)
    finish_reason: FinishReason = "stop"
    reward: float = 0.0
    reward_info: dict[str, float] = Field(default_factory=dict)
    meta: dict[str, Scalar] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_assignment=True)

    @model_validator(mode="after")
    def _aligned(self) -> Trajectory:
        n = len(self.token_ids)
        if n == 0:
            raise ValueError("trajectory has no tokens")
        per_token = {
            "logprobs": self.logprobs,
            "versions": self.versions,
            "loss_mask": self.loss_mask,
            "rewards": self.rewards,
        }
        if len(self.role_ids):
            per_token["role_ids"] = self.role_ids
        for name, arr in per_token.items():
            if len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} entries but token_ids has {n}")
        if self.prompt_len > n:
            raise ValueError(f"prompt_len {self.prompt_len} exceeds {n} tokens")
        if self.loss_mask.max() > 1:
            raise ValueError("loss_mask entries must be 0 or 1")
        if self.versions.min() < NOT_GENERATED:
            raise ValueError(f"versions must be >= {NOT_GENERATED}")
        if len(self.role_ids) and self.role_ids.max() >= len(self.roles):
            raise ValueError(f"role_ids must index roles {self.roles}")
        if not self.logprobs.max() <= 1e-4 or not np.isfinite(self.logprobs.min()):  # NaN fails both
            raise ValueError("logprobs must be finite and <= 0")
        if not np.isfinite(self.rewards.sum(dtype=np.float64)) or not math.isfinite(self.reward):
            raise ValueError("rewards must be finite")
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trajectory):
            return NotImplemented
        a, b = self.__dict__, other.__dict__
        return a.keys() == b.keys() and all(
            np.array_equal(a[k], b[k]) if k in PER_TOKEN else a[k] == b[k] for k in a
        )

    @property
    def finished(self) -> bool:
        return self.finish_reason in ("stop", "length")

    @property
    def num_generated(self) -> int:
        return int((self.versions != NOT_GENERATED).sum())

    def oldest_version(self) -> int | None:
        """Oldest policy version among the generated tokens this record trains (what staleness is
        measured by). A T-PPO segment trains only its latest window: the earlier windows are context."""
        gen = self.versions != NOT_GENERATED
        trained = self.versions[gen & (self.loss_mask > 0)]
        if not trained.size:
            trained = self.versions[gen]
        return int(trained.min()) if trained.size else None

    def staleness(self, learner_version: int) -> int:
        oldest = self.oldest_version()
        return 0 if oldest is None else max(0, learner_version - oldest)


class TensorMeta(_Contract):
    name: str
    shape: list[int]
    dtype: str
    nbytes: int = Field(ge=0)
    bucket: int = Field(0, ge=0)


class WeightVersion(_Contract):
    """Manifest of one weight push: what the receiver must get before it switches to `version`."""

    job_id: str
    version: int = Field(ge=0)
    step: int = Field(0, ge=0, description="Learner optimizer step that produced these weights.")
    tensors: list[TensorMeta] = Field(default_factory=list)
    num_buckets: int = Field(1, ge=1)
    checksum: str | None = Field(None, description="Digest of the tensor bytes, checked by receivers.")
    created_at: float = Field(default_factory=time.time)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)
