import json
import random

import msgpack
import pytest

from services.codec import SCHEMA_VERSION, CodecError, SchemaVersionError, decode, encode
from services.schemas import Episode, TensorMeta, Trajectory, Turn, WeightVersion
from tests.helpers import make_trajectory


def test_trajectory_round_trip_is_exact():
    t = make_trajectory(
        "j",
        version=3,
        role_ids=[0] * 6 + [1] * 6,
        roles=["attacker", "defender"],
        meta={"seed": 4, "env_ok": True},
        reward_info={"format": 1.0},
    )
    back = decode(encode(t), Trajectory)
    assert back == t
    assert back.oldest_version() == 3 and back.staleness(7) == 4


def test_packed_arrays_are_compact():
    rng = random.Random(0)
    t = make_trajectory("j", n_prompt=200, n_gen=1800)
    t.logprobs = [0.0] * 200 + [-rng.random() * 5 for _ in range(1800)]
    t.token_ids = [rng.randrange(150_000) for _ in range(2000)]
    wire = encode(t)
    assert len(wire) < len(json.dumps(t.model_dump(mode="json"))) / 2
    assert len(wire) < len(msgpack.packb(t.model_dump(mode="json"))) * 0.75
    assert len(wire) < 2000 * (4 + 4 + 4 + 1 + 4) + 600


def test_other_contracts_round_trip():
    ep = Episode(job_id="j", env="sokoban", seed=3, group_id="g", turns=[Turn(role="user", content="hi")])
    wv = WeightVersion(
        job_id="j", version=2, tensors=[TensorMeta(name="w", shape=[2, 3], dtype="float32", nbytes=24)]
    )
    assert decode(encode(ep), Episode) == ep
    assert decode(encode(wv)) == wv and wv.total_bytes == 24


def test_unknown_schema_version_is_rejected_clearly():
    data = msgpack.unpackb(encode(make_trajectory("j")))
    data["_v"] = SCHEMA_VERSION + 41
    with pytest.raises(SchemaVersionError, match=r"schema version 42.*understands \[1\]"):
        decode(msgpack.packb(data, use_bin_type=True))


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"\xc1garbage", "not a payoff message"),
        (msgpack.packb({"x": 1}), "missing kind/version"),
        (msgpack.packb({"_k": "nope", "_v": 1}), "unknown message kind"),
    ],
)
def test_garbage_is_a_codec_error(raw, words):
    with pytest.raises(CodecError, match=words):
        decode(raw)


def test_wrong_kind_and_invalid_content_are_rejected():
    ep = Episode(job_id="j", env="x", seed=0, group_id="g")
    with pytest.raises(CodecError, match="expected a trajectory"):
        decode(encode(ep), Trajectory)
    data = msgpack.unpackb(encode(make_trajectory("j")))
    data["loss_mask"] = data["loss_mask"][:-1]  # one entry short
    with pytest.raises(CodecError, match="loss_mask has 11 entries but token_ids has 12"):
        decode(msgpack.packb(data, use_bin_type=True))


def test_encode_refuses_unknown_types():
    with pytest.raises(TypeError):
        encode(Turn(role="a", content="b"))
