"""Registry of weight-sync transports (the data plane), keyed by the name that `WeightSyncConfig.transport`
and every push announcement carry. See services/weights/README.md for when to use which."""

from __future__ import annotations

from dataclasses import dataclass

from services.weights.transports.base import ReceiverTransport, SenderTransport
from services.weights.transports.per_push import PerPushReceiver, PerPushSender
from services.weights.transports.persistent import PersistentReceiver, PersistentSender


@dataclass(frozen=True)
class Transport:
    name: str
    sender: type[SenderTransport]
    receiver: type[ReceiverTransport]
    summary: str


TRANSPORTS: dict[str, Transport] = {
    t.name: t
    for t in (
        Transport(
            "per_push",
            PerPushSender,
            PerPushReceiver,
            "a new TCPStore + two-member group per push and replica",
        ),
        Transport(
            "persistent",
            PersistentSender,
            PersistentReceiver,
            "one group per replica, built once, reused, rebuilt after a failure or a re-registration",
        ),
    )
}


def get_transport(name: str) -> Transport:
    try:
        return TRANSPORTS[name]
    except KeyError:
        raise ValueError(
            f"unknown weight-sync transport {name!r}; choose one of: {', '.join(sorted(TRANSPORTS))}"
        ) from None


__all__ = ["TRANSPORTS", "Transport", "get_transport", "SenderTransport", "ReceiverTransport"]
