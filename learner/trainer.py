"""The learner loop, independent of how it is launched (Ray Train worker, or a plain process in tests).

Per step: take a batch of complete groups from the job's stream (never blocking rollouts: they only wait
when the queue is full), compute the algorithm's loss, step the optimizer(s), bump the policy version,
push weights every K steps (rank 0), checkpoint every N steps and only then ack the entries trained since
the previous checkpoint (exactly-once across crashes, see learner/checkpoint.py).

While it waits for a batch, rank 0 pushes its current weights to live replicas that are off its policy
(restarted at version 0, a failed push; services/weights/catchup.py), so a job whose replicas restarted
gets fresh trajectories again instead of waiting forever for them. A wait that gets nothing trainable
for `stall_timeout_s` (all stale, dead-lettered, or nothing) fails the learner with the reason
(learner/stall.py); `get_timeout_s` bounds one batch's wait while trainable data trickles in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from learner import algorithms, checkpoint, reward_norm
from learner import metrics as learner_metrics
from learner.batch import collate, complete_groups, merge_segments, top_up
from learner.critic import freeze_below
from learner.metrics import PhaseClock
from learner.stall import LearnerError, StallWatch, keep_alive
from services.config import data_plane_client
from services.jobspec import Algorithm, Hyper, JobSpec, RewardNormalization
from services.queue import Batch, Item, QueueConfig, TrajectoryQueue
from services.schemas import Trajectory
from services.weights import CatchUp, WeightSender, WeightSyncConfig

log = logging.getLogger(__name__)


class LearnerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str
    redis_url: str
    model: str = "tiny-qwen3"
    algorithm: Algorithm = "grpo"
    hyper: Hyper = Field(default_factory=Hyper)
    batch_size: int = Field(8, ge=1, description="Trajectories per optimizer step (whole groups).")
    batch_tokens: int = Field(0, ge=0, description="Token budget of a step (see JobSpec learner).")
    group_size: int = Field(1, ge=1)
    learning_rate: float = 1e-5
    critic_learning_rate: float = 1e-5
    steps: int = Field(100, ge=1)
    push_every: int = Field(1, ge=1)
    checkpoint_every: int = Field(10, ge=1)
    checkpoint_dir: str
    keep_checkpoints: int = Field(2, ge=1)
    ref_reset_every: int = Field(0, ge=0, description="COMAL: π_ref ← π every this many steps (0 = never).")
    get_timeout_s: float = Field(
        600.0, gt=0, description="Fail if one batch is not complete in this time (data arriving or not)."
    )
    stall_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Fail when no trainable trajectory (all stale, dead-lettered or none) arrives for this "
        "long, counted across learner restarts; a warning event at half of it.",
    )
    catch_up_every_s: float = Field(
        2.0, gt=0, description="Rank 0 re-syncs replicas off its policy at most this often while waiting."
    )
    queue: QueueConfig = Field(default_factory=QueueConfig)
    weight_sync: WeightSyncConfig = Field(default_factory=WeightSyncConfig)
    push_weights: bool = True
    train_layers: int | None = Field(None, ge=1, description="Train only the top N blocks (see JobSpec).")
    critic_layers: int | None = Field(None, ge=1, description="Value model from the first N blocks.")
    reward_normalization: RewardNormalization = "none"  # per data_source, see learner/reward_norm.py
    seed: int = 0

    @classmethod
    def from_job(cls, spec: JobSpec, job_id: str, redis_url: str, checkpoint_dir: str, **kw) -> LearnerConfig:
        ln = spec.learner
        # critic algorithms need no whole groups (and T-PPO segments of one group finish at different steps)
        group = 1 if algorithms.needs_critic(spec.algorithm) else spec.rollout.group_size
        return cls(
            job_id=job_id,
            redis_url=redis_url,
            model=spec.model.path,
            algorithm=spec.algorithm,
            hyper=spec.hyper,
            batch_size=ln.batch_size,
            batch_tokens=ln.batch_tokens,
            group_size=group,
            learning_rate=ln.learning_rate,
            critic_learning_rate=ln.critic_learning_rate,
            steps=ln.steps,
            push_every=ln.push_weights_every,
            checkpoint_every=ln.checkpoint_every,
            checkpoint_dir=checkpoint_dir,
            queue=QueueConfig.for_job(spec),
            seed=spec.seed,
            ref_reset_every=6 if spec.algorithm == "comal" else 0,
            train_layers=ln.train_layers,
            critic_layers=ln.critic_layers,
            stall_timeout_s=ln.stall_timeout_s,
            reward_normalization=ln.reward_normalization,
            **kw,
        )


def _trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


class Learner:
    def __init__(
        self,
        cfg: LearnerConfig,
        rank: int = 0,
        world_size: int = 1,
        wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
        device: str = "cpu",
    ):
        from services.models import load_model

        torch.manual_seed(cfg.seed + rank)
        self.cfg, self.rank, self.world = cfg, rank, world_size
        self.device = torch.device(device)
        base, self.tokenizer = load_model(cfg.model)
        self.base = base.to(self.device).train()
        if cfg.train_layers:
            freeze_below(self.base, cfg.train_layers)
        self.policy = wrap(self.base) if wrap else self.base
        self.opt = torch.optim.AdamW(_trainable(self.policy), lr=cfg.learning_rate, weight_decay=0.0)
        self.critic = self.critic_opt = self.ref = None
        if algorithms.needs_critic(cfg.algorithm):
            from learner.critic import Critic
            from services.models import resolve_model

            critic = Critic(resolve_model(cfg.model), layers=cfg.critic_layers).to(self.device)
            if cfg.train_layers:
                freeze_below(critic, min(cfg.train_layers, len(critic.backbone.layers)))
            self.critic = wrap(critic) if wrap else critic
            self.critic_opt = torch.optim.AdamW(_trainable(self.critic), lr=cfg.critic_learning_rate)
        if algorithms.needs_reference(cfg.algorithm, cfg.hyper):
            self.ref = load_model(cfg.model)[0].to(self.device).eval().requires_grad_(False)
        self.client = data_plane_client(cfg.redis_url)
        self.queue = TrajectoryQueue(self.client, cfg.job_id, cfg.queue)
        self.consumer = f"learner-{rank}"
        self.sender = WeightSender(self.client, cfg.job_id, cfg.weight_sync) if rank == 0 else None
        self.catch_up = (
            CatchUp(self.sender, every_s=cfg.catch_up_every_s) if self.sender and cfg.push_weights else None
        )
        self.stall = StallWatch(self.queue, self.consumer, cfg.stall_timeout_s)
        self.step_no, self.version = 0, 0
        self.held: list[Item] = []  # delivered, not yet in a complete group
        self.uncommitted: list[Item] = []  # trained, waiting for the next checkpoint to be acked
        self.history: list[dict] = []
        self.ckpt_root = Path(cfg.checkpoint_dir)

    # ------------------------------------------------------------------ resume
    def restore(self) -> bool:
        """Resume from the latest checkpoint; ack what it committed; re-take our own unacked entries."""
        last = checkpoint.latest(self.ckpt_root)
        if last is not None:
            from transformers import AutoModelForCausalLM

            saved = AutoModelForCausalLM.from_pretrained(last / "policy", dtype=torch.float32)
            self.base.load_state_dict(saved.state_dict())
            checkpoint.load_extra(
                last, {"opt": self.opt, "critic": self.critic, "critic_opt": self.critic_opt}
            )
            st = checkpoint.state(last)
            self.step_no, self.version = st["step"], st["version"]
            self.queue.ack(st["entry_ids"])  # saved but maybe not acked before the crash: idempotent
        self.held = self.queue.pending_of(self.consumer, learner_version=self.version).items
        if self.rank == 0:
            self.queue.set_learner_version(self.version)
        log.info("learner %s: resumed at step %d (v%d), %d re-delivered", *self._where())
        return last is not None

    def _where(self) -> tuple:
        return self.consumer, self.step_no, self.version, len(self.held)

    # ------------------------------------------------------------------ batches
    def next_batch(self) -> list[Item]:
        """At least `batch_size` trajectories made of complete groups; partial groups stay held."""
        started = time.monotonic()
        deadline = started + self.cfg.get_timeout_s
        self.stall.begin()
        while True:
            self._last_wait = time.monotonic() - started
            trajs = [i.trajectory for i in self.held]
            done, _ = complete_groups(trajs, self.cfg.group_size)
            if len(done) >= self.cfg.batch_size:
                ids = {t.id for t in done[: self._whole_groups(done)]}
                take = [i for i in self.held if i.trajectory.id in ids]
                self.held = [i for i in self.held if i.trajectory.id not in ids]
                return self._top_up(take)
            if time.monotonic() > deadline:
                raise LearnerError(
                    f"no full batch within {self.cfg.get_timeout_s}s "
                    f"(holding {len(self.held)}); are the rollout replicas running?"
                )
            # without group structure take only what the batch lacks: nothing is held over to a later
            # step, where it would be one version older than the bound it was admitted under
            need = self.cfg.batch_size - len(done) if self.cfg.group_size == 1 else self.cfg.batch_size
            mine = {i.entry_id for i in self.held + self.uncommitted}
            got = self.queue.get(
                self.consumer, need, block_ms=1000, learner_version=self.version, holding=mine
            )
            self.held += got.items
            self.stall.observe(got, self.version)  # raises LearnerError when stalled for too long
            self._touch()
            self._catch_up()

    def _whole_groups(self, done: list[Trajectory]) -> int:
        """How many of `done` (grouped in order) to take: whole groups, at least batch_size."""
        if self.cfg.group_size == 1:  # no group structure (PPO / T-PPO): exactly one batch
            return self.cfg.batch_size
        n, seen = 0, {}
        for t in done:
            seen[t.group_id] = seen.get(t.group_id, 0) + 1
        for k in seen.values():
            if n >= self.cfg.batch_size:
                break
            n += k
        return n

    def _top_up(self, take: list[Item]) -> list[Item]:
        """With a token budget (no group structure): add what is already waiting, never blocking."""
        if not self.cfg.batch_tokens or self.cfg.group_size != 1:
            return take
        mine = {i.entry_id for i in take + self.held + self.uncommitted}
        return top_up(self.queue, self.consumer, take, self.cfg.batch_tokens, self.version, mine)

    def _keepalive(self):
        """While a step, its push, checkpoint and report run, keep our entries from looking abandoned."""
        return keep_alive(self.queue, self.consumer, lambda: self.held + self.uncommitted)

    def _touch(self) -> None:
        mine = self.held + self.uncommitted
        if mine:
            lost = set(self.queue.touch(Batch(self.consumer, mine)))
            if lost:
                log.warning("learner %s lost %d entries to another consumer", self.consumer, len(lost))
                self.held = [i for i in self.held if i.entry_id not in lost]
                self.uncommitted = [i for i in self.uncommitted if i.entry_id not in lost]

    # ------------------------------------------------------------------ one step
    def train_step(self, items: list[Item]) -> dict[str, float]:
        t0 = time.perf_counter()
        clock = PhaseClock()  # the step's time account: time_<phase>_s in its stats
        trajs = merge_segments([i.trajectory for i in items])  # a sequence's T-PPO windows → one row
        batch = collate(trajs, self.tokenizer.pad_token_id or 0).to(self.device)
        reward_stats = reward_norm.apply(batch, trajs, self.cfg.reward_normalization)  # before advantages
        clock.lap("collate")
        self.opt.zero_grad(set_to_none=True)
        if self.critic_opt:
            self.critic_opt.zero_grad(set_to_none=True)
        if algorithms.is_preference(self.cfg.algorithm):
            loss, stats = algorithms.preference_loss(
                self.cfg.algorithm, self.policy, self.ref, batch, self.cfg.hyper
            )
        else:
            loss, stats = algorithms.policy_gradient_loss(
                self.cfg.algorithm, self.policy, batch, self.cfg.hyper, self.critic, self.ref
            )
        clock.lap("forward")  # policy, critic and reference forwards and the loss
        if loss is not None:
            loss.backward()
            clock.lap("backward")
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
            self.opt.step()
            if self.critic_opt:
                self.critic_opt.step()
            clock.lap("optimizer")
        self.step_no += 1
        self.version += 1
        self.uncommitted += items
        stale = (batch.versions >= 0) & (batch.mask > 0)
        gen_versions = batch.versions[batch.versions >= 0]
        trained_versions = batch.versions[stale]
        fin = batch.finished
        stats.update(reward_stats)  # the curve is over finished rows' raw rewards
        stats.update(
            step=self.step_no,
            version=self.version,
            samples=len(items),
            rows=len(trajs),
            finished=float(fin.sum()),
            trained_tokens=float(batch.mask.sum()),
            behaviour_version_max=float(gen_versions.max()) if gen_versions.numel() else -1.0,
            behaviour_version_min=float(trained_versions.min()) if trained_versions.numel() else -1.0,
            staleness=float((self.version - 1 - batch.versions[stale]).float().mean())
            if stale.any()
            else 0.0,
            step_s=time.perf_counter() - t0,
            **clock.stats(),
        )
        if self.ref is not None and self.cfg.ref_reset_every and self.step_no % self.cfg.ref_reset_every == 0:
            self.ref.load_state_dict(self.base.state_dict())  # COMAL: move the magnet
        if self.rank == 0:
            if self.step_no % self.cfg.push_every == 0:
                stats.update(self.push())
            self.queue.set_learner_version(self.version)
        if self.step_no % self.cfg.checkpoint_every == 0:
            t_ckpt = time.perf_counter()
            path = self.commit()
            stats["checkpoint_s"] = time.perf_counter() - t_ckpt
            if path is not None:
                stats["checkpoint"] = str(path)
        wait = getattr(self, "_last_wait", 0.0)
        stats["wait_s"] = wait
        stats["idle_ratio"] = wait / max(wait + stats["step_s"], 1e-9)
        if self.catch_up is not None:  # cumulative catch-up pushes (replicas re-synced between steps)
            stats.update(catchup_pushes=self.catch_up.pushes, catchup_ok=self.catch_up.ok)
        if self.rank == 0:
            learner_metrics.observe_step(self.cfg.job_id, stats, learner_metrics.reward_by_source(trajs))
        self.history.append(stats)
        return stats

    def _named(self) -> list[tuple[str, torch.Tensor]]:
        """What a push sends: every weight, or with train_layers the trained ones (the frozen ones are
        the base model's on both sides, so base + these = this policy)."""
        if self.cfg.train_layers:
            return [(n, p.detach()) for n, p in self.base.named_parameters() if p.requires_grad]
        return list(self.base.state_dict().items())

    def _catch_up(self) -> None:
        """Push the current weights to live replicas off the policy (rank 0; bounded, rate-limited)."""
        if self.catch_up is None:
            return
        try:
            res = self.catch_up.maybe(self._named, self.version, self.step_no, lag=self.cfg.push_every - 1)
        except Exception as e:  # e.g. Redis restarting: the next wait tries again
            log.warning("catch-up push v%d failed: %s", self.version, e)
            return
        if res is not None:
            log.info("catch-up push v%d: ok %s, failed %s", self.version, res.ok, res.failed)

    def push(self) -> dict[str, float]:
        if not (self.cfg.push_weights and self.sender):
            return {}
        res = self.sender.push(self._named(), self.version, self.step_no)
        if res.failed:
            log.warning(
                "weight push v%d: %d replica(s) failed: %s", self.version, len(res.failed), res.failed
            )
        return {
            **{f"time_push_{k}_s": v for k, v in res.phases.items()},
            **{f"push_account_{k}_s": v for k, v in res.account.items()},  # overlapping sub-phases
            "push_s": res.seconds,
            "push_bytes": float(res.bytes),
            "push_ok": float(len(res.ok)),
            "push_failed": float(len(res.failed)),
        }

    def commit(self) -> Path | None:
        """Checkpoint (rank 0 writes, listing every rank's trained entries), then each rank acks its own."""
        dist = torch.distributed
        multi = self.world > 1 and dist.is_available() and dist.is_initialized()
        mine = ([i.trajectory.id for i in self.uncommitted], [i.entry_id for i in self.uncommitted])
        everyone = [mine]
        if multi:
            everyone = [None] * self.world
            dist.all_gather_object(everyone, mine)
        path = None
        if self.rank == 0:
            path = checkpoint.save(
                self.ckpt_root,
                self.step_no,
                self.version,
                self.base,
                self.tokenizer,
                {"opt": self.opt, "critic": self.critic, "critic_opt": self.critic_opt},
                trained_ids=[t for ids, _ in everyone for t in ids],
                entry_ids=[e for _, eids in everyone for e in eids],
                keep=self.cfg.keep_checkpoints,
            )
        if multi:
            dist.barrier()  # nobody acks before the checkpoint that covers its work is on disk
        self.queue.ack(Batch(self.consumer, self.uncommitted))
        self.uncommitted = []
        return path

    def run(self, steps: int | None = None, on_step: Callable[[dict], None] | None = None) -> list[dict]:
        target = steps if steps is not None else self.cfg.steps
        while self.step_no < target:
            items = self.next_batch()
            with self._keepalive():  # a step, its push, checkpoint and report may outlast claim_idle_ms
                stats = self.train_step(items)
                if on_step:
                    on_step(stats)
        if self.uncommitted:
            self.commit()
        return self.history

    def export(self, out_dir: str | Path) -> Path:
        """The trained policy as an HF model directory (loadable by transformers and vLLM)."""
        out = Path(out_dir)
        self.base.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        return out
