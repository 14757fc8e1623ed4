"""Learner -> rollout replicas weight sync: the protocol (protocol.py), packing (packing.py) and pluggable
data-plane transports (transports/). See README.md in this directory."""

from services.weights.packing import TRAILER, digest, pack, plan_buckets, unpack
from services.weights.protocol import PushResult, WeightReceiver, WeightSender, WeightSyncConfig
from services.weights.transports import TRANSPORTS, get_transport
from services.weights.transports.base import WeightSyncError, resolve_backend

__all__ = [
    "TRANSPORTS",
    "TRAILER",
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
