"""One way to start or join Ray, so tests, the demo and the gateway agree on resources; and one way to
release everything a job's detached actor held.

Why the release exists: Ray removes a placement group only when its creator actor *and* its creator job
are dead. A job's learner is a detached actor created by the gateway's driver, so the placement group of
its Ray Train run (created by the Train controller, an actor the learner owns) outlives a killed learner
for as long as the gateway runs: its CPUs stay reserved and no further job is admitted. `release_owned`
walks the ownership tree in the GCS (the actor named `root`, the non-detached actors it created, theirs,
...), waits for those actors to die (they die with their owner) and removes every placement group one of
them created. It only ever touches that tree: another job's actors and placement groups have other
owners, and a detached actor met on the way has a lifetime of its own (Ray Train's shared
`AutoscalingCoordinator` is created by whichever run came first) so it and what it created are left
alone. It reads the GCS directly (no dashboard / state API needed) and every wait is bounded.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
DASHBOARD_ENV = "PAYOFF_RAY_DASHBOARD"
RELEASE_TIMEOUT_S = 60.0


def dashboard_enabled(env: dict[str, str] | None = None) -> bool:
    value = (os.environ if env is None else env).get(DASHBOARD_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{DASHBOARD_ENV}={value!r}: use 1 (dashboard on) or 0 (off)")


def init_ray(
    num_cpus: int | None = None,
    object_store_mb: int = 512,
    address: str | None = None,
    namespace: str = "payoff",
    log_to_driver: bool = True,
) -> None:
    """Join RAY_ADDRESS (a cluster) or start a local head sized for this machine. Idempotent.

    Locally the dashboard is off unless PAYOFF_RAY_DASHBOARD=1 (it costs ~10 s and ~300 MB on a 2-core
    box; nothing in payoff needs it) and the object store is capped, since trajectories travel through
    Redis, not the object store. Its workers get this process's PAYOFF_DATA_DIR (resolved), so every
    component finds the same model cache, checkpoints and secrets.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=namespace, log_to_driver=log_to_driver)
        return
    dashboard = dashboard_enabled()
    # the workers' data dir is the driver's: Ray Train runs a worker in its artifacts directory, where a
    # cwd-relative default would cache (and build) built-in models and warm starts a second time
    from services.config import Settings

    data_dir = Settings.from_env().data_dir
    ray.init(
        num_cpus=num_cpus or os.cpu_count(),
        include_dashboard=dashboard,
        dashboard_host="127.0.0.1",
        namespace=namespace,
        object_store_memory=object_store_mb * 1024 * 1024,
        log_to_driver=log_to_driver,
        runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "PAYOFF_DATA_DIR": str(data_dir)}},
    )


@dataclass
class OwnedTree:
    """The actor(s) named `root` and the non-detached actors they created, transitively (alive or dead),
    and the placement groups any of those created."""

    actors: list = field(default_factory=list)  # gcs_pb2.ActorTableData
    placement_groups: list = field(default_factory=list)  # gcs_pb2.PlacementGroupTableData

    def alive(self) -> list:
        from ray.core.generated import gcs_pb2

        return [a for a in self.actors if a.state != gcs_pb2.ActorTableData.DEAD]

    def held(self) -> list:
        from ray.core.generated import gcs_pb2

        return [p for p in self.placement_groups if p.state != gcs_pb2.PlacementGroupTableData.REMOVED]

    def describe(self) -> str:
        names = sorted({a.class_name for a in self.alive()})
        return f"{len(self.alive())} actors ({', '.join(names) or '-'}), {len(self.held())} placement groups"


def owned_tree(root: str, namespace: str) -> OwnedTree:
    """The ownership tree under every actor named `root` in `namespace` (several after a relaunch)."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    accessor = state._connect_and_get_accessor()  # the GCS tables, as ray.util.placement_group_table reads
    actors = [gcs_pb2.ActorTableData.FromString(b) for b in accessor.get_actor_table(None, None)]
    by_owner: dict[bytes, list] = {}
    for a in actors:
        if a.owner_address.worker_id:
            by_owner.setdefault(a.owner_address.worker_id, []).append(a)
    tree = OwnedTree()
    todo = [a for a in actors if a.name == root and a.ray_namespace == namespace]
    seen: set[bytes] = set()
    while todo:
        a = todo.pop()
        if a.actor_id in seen:
            continue
        seen.add(a.actor_id)
        tree.actors.append(a)
        workers = {a.address.worker_id} | {p.worker_id for p in a.previous_incarnations}
        todo += [c for w in workers if w for c in by_owner.get(w, []) if not c.is_detached]
    pgs = [gcs_pb2.PlacementGroupTableData.FromString(b) for b in accessor.get_placement_group_table()]
    tree.placement_groups = [p for p in pgs if p.creator_actor_id in seen]
    return tree


def release_owned(root: str, namespace: str, timeout_s: float = RELEASE_TIMEOUT_S) -> OwnedTree:
    """Kill the live actor `root` (if any), wait for the actors it owns to die and remove the placement
    groups any of them created. Raises TimeoutError naming what is still held after `timeout_s`."""
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    try:
        ray.kill(ray.get_actor(root, namespace=namespace), no_restart=True)
    except ValueError:  # not alive (or never was): its tree may still hold resources
        pass
    deadline = time.monotonic() + timeout_s
    removed: set[bytes] = set()
    while True:
        tree = owned_tree(root, namespace)
        for pg in tree.held():
            if pg.placement_group_id not in removed:
                try:
                    remove_placement_group(PlacementGroup(PlacementGroupID(pg.placement_group_id)))
                    removed.add(pg.placement_group_id)
                except Exception as e:  # retried on the next pass; what is left is raised at the deadline
                    log.warning(
                        "%s: removing placement group %s failed: %s", root, pg.placement_group_id.hex(), e
                    )
        if not tree.alive() and not tree.held():
            return tree
        if time.monotonic() > deadline:
            raise TimeoutError(f"{root}: still held {timeout_s:g} s after stop: {tree.describe()}")
        time.sleep(0.2)
