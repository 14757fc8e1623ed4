"""Catch-up pushes: a replica that is not at the learner's policy gets the learner's current weights
without waiting for the next optimizer step.

A replica restarted by Serve (or newly added) registers at the version of the model it loaded (0 for the
base model); one whose push failed keeps its older version. Its registration record shows it. The learner
calls `CatchUp.maybe` while it waits for a batch (which is exactly when no periodic push comes), so a job
whose only replica restarted is not stuck waiting for fresh trajectories that only fresh weights produce.

Invariants:
  - only live replicas whose applied version is off the learner's policy are pushed to: older than
    `version - lag` (`lag` = push_every - 1: between two periodic pushes the replicas rightly hold the
    last one) or newer than `version` (a learner resumed from an older checkpoint); the others are not
    touched (a push addresses only its targets);
  - bounded and rate-limited: at most one catch-up push per `every_s`, each bounded by the sender's
    timeouts; a replica whose catch-up failed is tried again only after a backoff that doubles up to
    `max_backoff_s`, so a replica that never answers costs the learner at most one push per backoff;
  - the same path as a periodic push: the manifest, every checksum and the engine's name / shape / dtype
    check apply. With `train_layers` only the trained blocks travel, so a replica started from the base
    model ends up with the learner's policy because the learner's frozen blocks are the base model's.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.weights.packing import Named
from services.weights.protocol import PushResult, WeightSender


class CatchUp:
    def __init__(
        self,
        sender: WeightSender,
        every_s: float = 2.0,
        max_backoff_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.sender, self.every_s, self.max_backoff_s, self.clock = sender, every_s, max_backoff_s, clock
        self._next = float("-inf")
        self._retry: dict[str, tuple[float, float]] = {}  # replica id -> (not before, current backoff)
        self.pushes = self.ok = self.failed = 0

    def behind(self, version: int, lag: int = 0) -> list[str]:
        """Live replicas whose applied version is off the learner's `version` (see the invariants)."""
        out = []
        for rid, info in self.sender.live_replicas().items():
            v = int(info.get("version", -1))
            if v < version - lag or v > version:
                out.append(rid)
        return sorted(out)

    def due(self, version: int, lag: int = 0) -> list[str]:
        """`behind` minus the replicas still backing off after a failed catch-up."""
        now = self.clock()
        return [r for r in self.behind(version, lag) if self._retry.get(r, (now, 0.0))[0] <= now]

    def maybe(
        self, named: Callable[[], Named], version: int, step: int = 0, lag: int = 0
    ) -> PushResult | None:
        """Push `named()` to the replicas that are due, at most once per `every_s`; None if nothing was
        pushed (too soon, or every live replica is at the policy)."""
        now = self.clock()
        if now < self._next:
            return None
        self._next = now + self.every_s
        targets = self.due(version, lag)
        if not targets:
            return None
        res = self.sender.push(named(), version, step, replicas=targets)
        self.pushes += 1
        self.ok += len(res.ok)
        self.failed += len(res.failed)
        now = self.clock()
        for rid in res.ok:
            self._retry.pop(rid, None)
        for rid in res.failed:
            backoff = min(self.max_backoff_s, 2 * self._retry.get(rid, (0.0, self.every_s / 2))[1])
            self._retry[rid] = (now + backoff, backoff)
        return res
