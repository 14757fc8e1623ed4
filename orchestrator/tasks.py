"""Which task and which seed each rollout request gets.

Invariant: the sequence of (task, call index) pairs depends only on the job spec (its seed and task
weights), never on timing, so two runs of one job — async and sync — draw the same tasks in the same order.
"""

from __future__ import annotations

import random

from services.jobspec import JobSpec, TaskSpec


class TaskSampler:
    """Draws the next task by the spec's weights; counts the calls (the base of every seed)."""

    def __init__(self, spec: JobSpec):
        self.tasks, self.weights = spec.tasks, [t.weight for t in spec.tasks]
        self.seed_base = spec.seed * 1_000_003
        self.calls = 0
        self._rng = random.Random(spec.seed)

    def next(self) -> tuple[TaskSpec, int]:
        """The next task and this call's index (0, 1, 2, ...)."""
        task = self._rng.choices(self.tasks, self.weights)[0]
        call, self.calls = self.calls, self.calls + 1
        return task, call
