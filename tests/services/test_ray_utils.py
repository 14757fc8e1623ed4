"""A local Ray head started by `init_ray` hands its workers the driver's data dir: Ray Train runs workers in
its artifacts directory, where the cwd-relative default would build a second model cache."""

from __future__ import annotations

import os

import ray

from services.config import Settings


def test_workers_share_the_drivers_data_dir(ray_session):
    @ray.remote(num_cpus=0)
    def seen() -> tuple[str | None, str]:
        return os.environ.get("PAYOFF_DATA_DIR"), str(Settings.from_env().data_dir)

    env, resolved = ray.get(seen.remote(), timeout=60)
    assert env == resolved == str(Settings.from_env().data_dir)
