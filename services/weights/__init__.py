"""Learner -> rollout replicas weight sync: the protocol and its sender (protocol.py), the replica side
(receiver.py), packing (packing.py), pluggable data-plane transports (transports/) and catch-up pushes
to replicas off the policy (catchup.py). See README.md in this directory."""

from services.weights.catchup import CatchUp
from services.weights.packing import TRAILER, digest, pack, plan_buckets, unpack
from services.weights.protocol import PushResult, WeightSender, WeightSyncConfig
from services.weights.receiver import WeightReceiver
from services.weights.transports import TRANSPORTS, get_transport
from services.weights.transports.base import WeightSyncError, resolve_backend

__all__ = [
    "TRANSPORTS",
    "TRAILER",
    "CatchUp",
    "PushResult",
    "WeightReceiver",
    "WeightSender",
    "WeightSyncConfig",
    "WeightSyncError",
    "digest",
    "get_transport",
    "pack",
    "plan_buckets",
    "resolve_backend",
    "unpack",
]
