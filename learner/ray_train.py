"""Launch the learner as a Ray Train `TorchTrainer` (DDP by default, FSDP optional).

Every worker is a consumer of the job's stream (`learner-<rank>`); gradients are all-reduced by DDP, rank 0
pushes weights and writes checkpoints, every rank acks its own entries after the checkpoint (see
learner/trainer.py). Ray Train restarts failed workers (FailureConfig), and a restarted worker resumes from
the latest checkpoint, so nothing is lost or trained twice.

The trainer is `TorchTrainer` without Ray Train's detached `PlacementGroupCleaner`: that helper learns
that the controller died from the state API (`ray.util.state.get_actor`), which is served by the
dashboard; on a local head without it every check fails ("State API may be temporarily unavailable") and
it retries forever, so it never removes the run's placement group and never exits (one leaked process
per run). The job's stop releases the run's actors and placement groups instead, by ownership
(services/ray_utils.release_owned). Placing the worker group is retried a bounded number of times, so a
learner that cannot be placed fails its job instead of waiting forever.
"""

from __future__ import annotations

import datetime
import functools
import logging
import time

from pydantic import BaseModel, ConfigDict, Field

from learner.trainer import LearnerConfig

log = logging.getLogger(__name__)
RAY_REPORT_EVERY = 10  # steps between metric-only reports to Ray Train (see train_loop)


class TrainLaunch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    strategy: str = Field("ddp", pattern="^(ddp|fsdp|deepspeed)$")
    rollout_cores: int = Field(
        0, ge=0, description="The job's rollout pool in cores (services/affinity.py keeps the pools apart)."
    )
    max_failures: int = Field(2, ge=0, description="Worker restarts before the job fails.")
    collective_timeout_s: float = Field(600.0, gt=0, description="DDP all-reduce timeout: never hang.")
    start_retries: int = Field(
        3, ge=0, description="Worker-group placements that time out (60 s each) before the job fails."
    )
    storage_path: str | None = None


def train_loop(config: dict) -> None:
    """Runs inside every Ray Train worker."""
    import ray.train
    import ray.train.torch as rt

    from learner import metrics as learner_metrics
    from learner.trainer import Learner

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = LearnerConfig.model_validate(config["learner"])
    strategy = config.get("strategy", "ddp")
    device = str(rt.get_device())
    if device == "cpu":  # as many intra-op threads as the worker holds CPUs, on its own cores if it can
        from services import affinity

        cpus = float(config.get("cpus_per_worker", 1))
        learner_cores = world * affinity.threads_for(cpus)
        p = affinity.plan("learner", cpus, rank, int(config.get("rollout_cores", 0)), learner_cores)
        affinity.apply(p)

    def wrap(model):
        if world == 1:
            return model
        return rt.prepare_model(model, parallel_strategy=strategy if strategy != "deepspeed" else "ddp")

    learner = Learner(cfg, rank=rank, world_size=world, wrap=wrap, device=device)
    learner.restore()
    from services.jobs import CheckpointEvent, StepEvent, publish_event

    last_report = 0.0

    def report(stats: dict) -> None:
        nonlocal last_report
        t0 = time.perf_counter()
        step = int(stats["step"])
        metrics = {k: v for k, v in stats.items() if isinstance(v, (int, float))}
        metrics["report_s"] = last_report  # the previous step's bookkeeping (events + Ray Train report)
        if rank == 0:
            learner_metrics.PHASE_SECONDS.labels(cfg.job_id, "report").inc(last_report)
        ckpt = stats.get("checkpoint")
        if rank == 0:  # the job's event stream: the gateway's SSE, reward curve and summary read it
            try:
                publish_event(
                    learner.client,
                    StepEvent(
                        job_id=cfg.job_id, step=step, policy_version=int(stats["version"]), metrics=metrics
                    ),
                )
                if ckpt:
                    publish_event(
                        learner.client,
                        CheckpointEvent(
                            job_id=cfg.job_id,
                            step=step,
                            path=f"{ckpt}/policy",
                            policy_version=int(stats["version"]),
                        ),
                    )
            except Exception as e:  # metrics must never stop training
                log.warning("could not publish step events: %s", e)
        # our own checkpoint dir is the source of truth for resume; Ray gets a copy for its Result. Ray
        # Train holds one unconsumed report per worker and its controller drains it every ~2 s, so a
        # report per step would cap the learner at one step per 2 s. Report checkpoint steps (only rank 0
        # holds the checkpoint, but every rank reports), the last step and every RAY_REPORT_EVERY steps;
        # the job's event stream above carries every step. Decided by step, not by clock, so every rank
        # makes the same report calls.
        if step % cfg.checkpoint_every == 0 or step >= cfg.steps or step % RAY_REPORT_EVERY == 0:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(ckpt) if ckpt else None)
        last_report = time.perf_counter() - t0

    learner.run(on_step=report)
    if rank == 0 and config.get("export_dir"):
        learner.export(config["export_dir"])


@functools.cache
def trainer_class():
    """`TorchTrainer` minus Ray Train's PlacementGroupCleaner callback (see the module docstring)."""
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    class JobTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            callbacks = super()._create_default_callbacks()
            return [c for c in callbacks if not isinstance(c, PlacementGroupCleanerCallback)]

    return JobTrainer


def build_trainer(learner: LearnerConfig, launch: TrainLaunch, export_dir: str | None = None):
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig

    use_gpu = launch.gpus_per_worker > 0
    resources = {"CPU": launch.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = launch.gpus_per_worker
    return trainer_class()(
        train_loop,
        train_loop_config={
            "learner": learner.model_dump(),
            "strategy": launch.strategy,
            "export_dir": export_dir,
            "cpus_per_worker": launch.cpus_per_worker,
            "rollout_cores": launch.rollout_cores,
        },
        torch_config=TorchConfig(
            backend="nccl" if use_gpu else "gloo", timeout_s=int(launch.collective_timeout_s)
        ),
        scaling_config=ScalingConfig(
            num_workers=launch.workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=f"learner-{learner.job_id}",
            storage_path=launch.storage_path,
            failure_config=FailureConfig(
                max_failures=launch.max_failures, controller_failure_limit=launch.start_retries
            ),
        ),
    )


def fit(learner: LearnerConfig, launch: TrainLaunch | None = None, export_dir: str | None = None):
    """Blocking: run the learner to `learner.steps` on the current Ray cluster; returns Ray's Result."""
    launch = launch or TrainLaunch()
    started = datetime.datetime.now()
    result = build_trainer(learner, launch, export_dir).fit()
    log.info("learner %s finished in %s", learner.job_id, datetime.datetime.now() - started)
    return result
