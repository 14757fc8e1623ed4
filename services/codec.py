"""Compact, versioned wire format for the contracts (msgpack, never pickle).

Every message is a msgpack map with a kind tag `_k` and a schema version `_v`. Per-token arrays of a
Trajectory travel as little-endian packed bytes (4 bytes per int/float, 1 per mask/role entry) instead
of msgpack lists: smaller, and decoded without a Python loop per token. A message from a schema version
this build does not understand is rejected with SchemaVersionError, never half-decoded.

Hot path (every trajectory crosses the queue once each way): a Trajectory is a flat contract (scalars,
packed arrays, lists and dicts of scalars; no nested models, no computed fields), so encode packs its
validated field values directly instead of going through pydantic's serializer; the bytes are the same
as `model_dump()` would give. Decode always validates through the model (bounds, alignment): nothing
unvalidated reaches a learner. Decoded arrays are writable and own their memory (not views of the
message).
"""

from __future__ import annotations

from typing import TypeVar

import msgpack
import numpy as np
from pydantic import BaseModel, ValidationError

from services.schemas import Episode, Trajectory, WeightVersion

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

_KINDS: dict[str, type[BaseModel]] = {
    "trajectory": Trajectory,
    "episode": Episode,
    "weight_version": WeightVersion,
}
_KIND_OF = {cls: kind for kind, cls in _KINDS.items()}
# per-token arrays packed as raw bytes: field -> numpy dtype
_PACKED = {
    "trajectory": {
        name: np.dtype(dtype)
        for name, dtype in (
            ("token_ids", "<i4"),
            ("logprobs", "<f4"),
            ("versions", "<i4"),
            ("loss_mask", "|u1"),
            ("rewards", "<f4"),
            ("role_ids", "|u1"),
        )
    }
}
# contracts whose validated field values msgpack can pack as they are (see the module docstring)
_FLAT = frozenset(kind for kind, cls in _KINDS.items() if kind in _PACKED and not cls.model_computed_fields)

M = TypeVar("M", bound=BaseModel)


class CodecError(ValueError):
    """A message that cannot be decoded (corrupt, wrong kind, or failing validation)."""


class SchemaVersionError(CodecError):
    """A message written by a schema version this build does not understand."""


def encode(obj: BaseModel) -> bytes:
    kind = _KIND_OF.get(type(obj))
    if kind is None:
        raise TypeError(f"no wire format for {type(obj).__name__}")
    # a flat contract's __dict__ holds exactly its fields, in order: what model_dump() would copy out
    data = dict(obj.__dict__) if kind in _FLAT else obj.model_dump()
    for field, dtype in _PACKED.get(kind, {}).items():
        data[field] = np.ascontiguousarray(data[field], dtype=dtype).tobytes()
    data["_k"], data["_v"] = kind, SCHEMA_VERSION
    return msgpack.packb(data, use_bin_type=True)


def decode(raw: bytes, expect: type[M] | None = None) -> M:
    """Decode and validate one message; raises CodecError / SchemaVersionError with a clear reason."""
    try:
        data = msgpack.unpackb(raw, raw=False)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise CodecError(f"not a payoff message ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or "_k" not in data or "_v" not in data:
        raise CodecError("not a payoff message (missing kind/version header)")
    kind, version = data.pop("_k"), data.pop("_v")
    if version not in SUPPORTED_VERSIONS:
        raise SchemaVersionError(
            f"{kind} message has schema version {version!r}; this build understands "
            f"{sorted(SUPPORTED_VERSIONS)}. Upgrade payoff on the reading side or drain the queue."
        )
    cls = _KINDS.get(kind)
    if cls is None:
        raise CodecError(f"unknown message kind {kind!r}")
    if expect is not None and cls is not expect:
        raise CodecError(f"expected a {_KIND_OF[expect]} message, got {kind!r}")
    for field, dtype in _PACKED.get(kind, {}).items():
        if isinstance(data.get(field), bytes):
            try:
                # one copy into a writable buffer of its own (the learner may write to it)
                data[field] = np.frombuffer(bytearray(data[field]), dtype=dtype)
            except ValueError as e:
                raise CodecError(f"{kind}.{field}: corrupt packed array ({e})") from None
    try:
        return cls.model_validate(data)  # type: ignore[return-value]
    except ValidationError as e:
        raise CodecError(f"invalid {kind}: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
