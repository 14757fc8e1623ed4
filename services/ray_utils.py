"""One way to start or join Ray, so tests, the demo and the gateway agree on resources."""

from __future__ import annotations

import os


def init_ray(
    num_cpus: int | None = None,
    object_store_mb: int = 512,
    address: str | None = None,
    namespace: str = "payoff",
    log_to_driver: bool = True,
) -> None:
    """Join RAY_ADDRESS (a cluster) or start a local head sized for this machine. Idempotent.

    Locally the dashboard is off (it costs ~10 s and ~300 MB on a 2-core box) and the object store is
    capped, since trajectories travel through Redis, not the object store.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=namespace, log_to_driver=log_to_driver)
        return
    ray.init(
        num_cpus=num_cpus or os.cpu_count(),
        include_dashboard=False,
        namespace=namespace,
        object_store_memory=object_store_mb * 1024 * 1024,
        log_to_driver=log_to_driver,
        runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
    )
