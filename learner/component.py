"""The learner as a job component of the gateway's runner (services/jobs.py contract).

One detached Ray actor per job (named `learner_actor_name(job_id)`, so any gateway process can find it)
drives the job: it keeps the job's rollout replicas playing episodes of the job's task mix (they write the
trajectories to the job's Redis stream, with judge rewards where the game needs them), and runs the Ray
Train learner to `learner.steps`. Step metrics and checkpoints reach the job's event stream from the
learner itself (learner/ray_train.py). The job succeeds when training finishes and the policy is exported.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path

import ray

from services.jobs import (
    LEARNER,
    ComponentStatus,
    JobRecord,
    RunContext,
    learner_actor_name,
    register_component,
    rollout_app_name,
)

log = logging.getLogger(__name__)
NAMESPACE = "payoff"


@ray.remote(num_cpus=0, max_concurrency=4)
class JobDriver:
    def __init__(self, job_id: str, spec: dict, redis_url: str, data_dir: str):
        from services.jobspec import JobSpec

        self.job_id, self.redis_url = job_id, redis_url
        self.spec = JobSpec.model_validate(spec)
        self.dir = Path(data_dir) / "jobs" / job_id
        self.state, self.message = "starting", ""
        self._stop = threading.Event()
        threading.Thread(target=self._main, daemon=True, name="job-driver").start()

    def status(self) -> tuple[str, str]:
        return self.state, self.message

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ driving
    def _main(self) -> None:
        from learner.ray_train import TrainLaunch, fit
        from learner.trainer import LearnerConfig

        roller = threading.Thread(target=self._rollouts, daemon=True, name="rollouts")
        roller.start()
        try:
            spec, ln = self.spec, self.spec.learner
            cfg = LearnerConfig.from_job(spec, self.job_id, self.redis_url, str(self.dir / "checkpoints"))
            launch = TrainLaunch(workers=ln.workers, cpus_per_worker=ln.cpus_per_worker,
                                 gpus_per_worker=ln.gpus_per_worker, strategy=ln.strategy,
                                 storage_path=str(self.dir / "ray"))
            self.state = "running"
            result = fit(cfg, launch, export_dir=str(self.dir / "final"))
            if result.error:
                raise RuntimeError(f"training failed: {result.error}")
            self.state, self.message = "succeeded", f"policy exported to {self.dir / 'final'}"
        except Exception as e:
            self.state, self.message = "failed", f"{type(e).__name__}: {e}"[:2000]
            log.exception("job %s: learner failed", self.job_id)
        finally:
            self._stop.set()

    def windowed(self) -> bool:
        """T-PPO windows (rollout/tppo.py) drive the rollouts when the job is async T-PPO and every task
        is single-turn; otherwise replicas play whole episodes."""
        spec = self.spec
        return (spec.algorithm == "tppo" and spec.asynchrony.mode == "async"
                and all(t.max_turns == 1 for t in spec.tasks))

    def _rollouts(self) -> None:
        """async: keep one request in flight per rollout replica until training ends — a T-PPO window
        step (`/v1/tppo/step`) or, for other jobs, one group of whole episodes.
        sync: generate one learner batch of whole episodes, then wait for the learner to train on it and
        push the new weights before generating the next (generate → score → train → push, no overlap)."""
        from ray import serve

        from rollout.engine import SamplingParams
        from rollout.serve import EpisodeRequest, WindowStepRequest
        from services.config import redis_client
        from services.queue import TrajectoryQueue

        spec, r, a = self.spec, self.spec.rollout, self.spec.asynchrony
        sync, windowed = a.mode == "sync", self.windowed()
        client = redis_client(self.redis_url)
        queue = TrajectoryQueue(client, self.job_id)
        stats = _RolloutStats(r.replicas)
        groups_per_batch = max(1, -(-spec.learner.batch_size // r.group_size))
        # async: generation runs at most max_staleness learner batches ahead of training, so rollouts
        # wait (and count as idle) instead of producing trajectories the staleness bound would drop
        ahead = max(1, a.max_staleness) * spec.learner.batch_size
        rng = random.Random(spec.seed)
        weights = [t.weight for t in spec.tasks]
        sampling = SamplingParams(max_tokens=r.max_response_tokens, temperature=r.temperature, top_p=r.top_p)
        handle, calls, inflight, produced, base_version = None, 0, [], 0, 0
        while not self._stop.is_set():
            if handle is None:
                try:
                    handle = serve.get_app_handle(rollout_app_name(self.job_id))
                except Exception:  # deployed concurrently by the runner
                    time.sleep(0.5)
                    continue
            if sync and produced == 0:
                base_version = queue.learner_version()  # read before this batch exists: no lost wake-up
            if sync and produced == groups_per_batch and not inflight:
                while not self._stop.is_set() and queue.learner_version() <= base_version:
                    time.sleep(0.05)  # the learner trains on this batch and pushes; rollouts idle
                produced = 0
                continue
            limit = min(r.replicas, groups_per_batch - produced) if sync else r.replicas
            if not sync and len(inflight) < limit and queue.undelivered() >= ahead:
                limit = len(inflight)  # far enough ahead of the learner: issue nothing new
                if not inflight:
                    time.sleep(0.05)
                    continue
            while len(inflight) < limit:
                task = rng.choices(spec.tasks, weights)[0]
                if windowed:  # each replica keeps its own active batch; its first call fixes its seeds
                    req = WindowStepRequest(env=task.env, data=task.data_path, options=task.options,
                                            batch_size=r.groups_per_step * r.group_size, group_size=r.group_size,
                                            window=a.window_tokens, max_response_tokens=r.max_response_tokens,
                                            sampling=sampling, first_seed=spec.seed * 1_000_003 + calls * 100_000,
                                            lengths=r.response_lengths)
                    inflight.append(handle.tppo_step.remote(req))
                else:
                    req = EpisodeRequest(env=task.env, data=task.data_path, options=task.options,
                                         seed=spec.seed * 1_000_003 + calls, group_size=r.group_size,
                                         max_turns=task.max_turns, enqueue=True, sampling=sampling,
                                         lengths=r.response_lengths)
                    inflight.append(handle.episodes.remote(req))
                calls += 1
                produced += 1
            if not inflight:
                continue
            done = inflight.pop(0)
            try:
                stats.add(done.result(timeout_s=600))
            except Exception as e:  # a replica restarting: log and keep going
                if not self._stop.is_set():
                    log.warning("job %s: rollout request failed: %s", self.job_id, e)
                    time.sleep(1.0)
            stats.publish(client, self.job_id)
        stats.publish(client, self.job_id, force=True)


class _RolloutStats:
    """What the driver saw of its rollouts, published in the job summary (and read by bench/ for P1/P7)."""

    def __init__(self, replicas: int):
        self.replicas, self.t0, self.last = replicas, time.monotonic(), 0.0
        self.busy: dict[str, float] = {}
        self.trajectories = self.finished = self.tokens = 0
        self.rewards: list[float] = []

    def add(self, res: dict) -> None:
        self.busy[res["replica"]] = self.busy.get(res["replica"], 0.0) + float(res.get("busy_s", 0.0))
        if "segments" in res:  # a T-PPO window step
            self.trajectories += res["segments"]
            self.finished += res["finished"]
            self.tokens += res["tokens"]
            self.rewards += res["rewards"]
        else:
            trajs = res.get("trajectories", [])
            self.trajectories += len(trajs)
            self.finished += len(trajs)
            self.tokens += sum(t["generated"] for t in trajs)
            self.rewards += [t["reward"] for t in trajs]

    def publish(self, client, job_id: str, force: bool = False) -> None:
        from services.jobs import publish_rollout_stats

        now = time.monotonic()
        if not force and now - self.last < 2.0:
            return
        self.last, wall = now, now - self.t0
        recent = self.rewards[-64:]
        publish_rollout_stats(client, job_id, {
            "trajectories": self.trajectories, "finished": self.finished, "tokens": self.tokens,
            "wall_s": round(wall, 3), "busy_s": round(sum(self.busy.values()), 3),
            "idle_ratio": round(max(0.0, 1.0 - sum(self.busy.values()) / max(wall * self.replicas, 1e-9)), 4),
            "reward_recent": round(sum(recent) / len(recent), 4) if recent else 0.0})


class LearnerComponent:
    """Runner-facing side: start / poll / stop the job's driver actor by name."""
    name = LEARNER

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def _actor(self, job: JobRecord):
        try:
            return ray.get_actor(learner_actor_name(job.id), namespace=NAMESPACE)
        except ValueError:
            return None

    def start(self, job: JobRecord) -> None:
        if self._actor(job) is not None:
            return
        JobDriver.options(name=learner_actor_name(job.id), namespace=NAMESPACE, lifetime="detached",
                          get_if_exists=True).remote(job.id, job.spec.model_dump(), self.ctx.redis_url,
                                                     str(self.ctx.data_dir))

    def poll(self, job: JobRecord) -> ComponentStatus:
        actor = self._actor(job)
        if actor is None:
            return ComponentStatus(state="absent")
        try:
            state, message = ray.get(actor.status.remote(), timeout=30)
        except Exception as e:  # the actor died: the job fails with the cause
            return ComponentStatus(state="failed", message=f"learner driver died: {e}"[:2000])
        return ComponentStatus(state=state, message=message)

    def stop(self, job: JobRecord) -> None:
        actor = self._actor(job)
        if actor is None:
            return
        try:
            ray.get(actor.stop.remote(), timeout=10)
        except Exception:
            pass
        ray.kill(actor, no_restart=True)


register_component(LEARNER, LearnerComponent, order=90)
