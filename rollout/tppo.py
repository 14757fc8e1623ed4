"""T-PPO truncated rollout with successive batching (spec §2.2).

Each `step()` generates at most `window` new tokens for every active sequence. A sequence that emits EOS,
or reaches `max_response_tokens` (L_max), is finished: the game scores it and it leaves the batch. The
others stay and continue at the next step — under whatever policy version the engine has by then, and
every token keeps the version that produced it. Freed slots are refilled with new prompts × group_size,
so the batch stays full. Every step emits one Trajectory *segment* per active sequence: the whole
sequence so far, with the loss mask on the tokens of this window only (earlier windows were trained on
at earlier steps) and finish_reason 'window' until it finishes.

Each request names its sequence (`cache_key` = the episode id), so an engine that keeps KV between calls
prefills only what is new since the sequence's previous window; finished sequences are released.

Single-turn games only (a window boundary inside a multi-turn exchange has no clean meaning); games
that need the judge are scored through the same episode `scorer` the EpisodeRunner uses, in one
batched call per step.
"""

from __future__ import annotations

import itertools
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rollout.engine import Engine, GenRequest, SamplingParams
from services.jobspec import LengthProfile
from services.schemas import NOT_GENERATED, Episode, Trajectory, Turn, new_id

EpisodeScorer = Callable[[list[Episode]], list[dict[str, float]]]


@dataclass
class _Seq:
    env: object
    episode_id: str
    group_id: str
    seed: int
    prompt: list[int]
    observation: str = ""
    limit: int = 0  # this sequence's L_max (a drawn length under a LengthProfile)
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    segment: int = 0


class WindowedRollout:
    def __init__(
        self,
        engine: Engine,
        env_factory: Callable[[], object],
        job_id: str,
        env_name: str,
        batch_size: int,
        group_size: int,
        window: int,
        max_response_tokens: int,
        sampling: SamplingParams | None = None,
        first_seed: int = 0,
        scorer: EpisodeScorer | None = None,
        lengths: LengthProfile | None = None,
    ):
        if window > max_response_tokens:
            raise ValueError(f"window ({window}) is larger than max_response_tokens ({max_response_tokens})")
        self.engine, self.env_factory, self.job_id, self.env_name = engine, env_factory, job_id, env_name
        self.batch_size, self.group_size = batch_size, group_size
        self.window, self.max_len = window, max_response_tokens
        self.sampling = sampling or SamplingParams()
        self.scorer, self.lengths = scorer, lengths
        if lengths is not None:
            self.sampling = self.sampling.model_copy(update={"ignore_eos": True})
        self._seeds = itertools.count(first_seed)
        self.active: list[_Seq] = []
        self.finished = 0
        self.last_rewards: list[float] = []  # rewards of the sequences finished by the latest step
        self.last_account: dict[str, float] = {}  # the latest step's seconds: generate, score, segments

    def _refill(self) -> None:
        while len(self.active) < self.batch_size:
            seed, group = next(self._seeds), new_id()
            for member in range(self.group_size):
                env = self.env_factory()
                obs = env.reset(seed)
                role = env.current_role
                prompt = self.engine.chat_prompt_ids([{"role": "user", "content": obs[role]}])
                limit = self.lengths.draw(seed, member, self.max_len) if self.lengths else self.max_len
                self.active.append(
                    _Seq(env, new_id(), group, seed, prompt, observation=obs[role], limit=limit)
                )

    def step(self) -> list[Trajectory]:
        """One T-PPO step: ≤ window tokens for every active sequence; returns this step's segments."""
        t0 = time.perf_counter()
        self._refill()
        reqs = [
            GenRequest(
                prompt_ids=s.prompt + s.tokens,
                cache_key=s.episode_id,
                params=self.sampling.model_copy(
                    update={
                        "max_tokens": min(self.window, s.limit - len(s.tokens)),
                        "seed": None
                        if self.sampling.seed is None
                        else self.sampling.seed + zlib.crc32(f"{s.seed}/{s.episode_id}/{s.segment}".encode()),
                    }
                ),
            )
            for s in self.active
        ]
        outs = self.engine.generate(reqs)
        t_gen = time.perf_counter()
        starts, ended = [], {}  # ended: index in the batch -> finish reason
        for i, (s, out) in enumerate(zip(self.active, outs)):
            starts.append(len(s.tokens))
            s.tokens += out.token_ids
            s.logprobs += out.logprobs
            s.versions += out.versions
            if out.finish_reason == "stop" or len(s.tokens) >= s.limit:
                natural = out.finish_reason == "stop" or s.limit < self.max_len  # a drawn length is its EOS
                ended[i] = "stop" if natural else "length"
        self.engine.release([self.active[i].episode_id for i in ended])
        rewards = self._score([self.active[i] for i in ended])
        reward_of = dict(zip(ended, rewards))
        t_score = time.perf_counter()
        segments, still = [], []
        for i, s in enumerate(self.active):
            segments.append(
                self._segment(s, starts[i], i in ended, ended.get(i, "window"), reward_of.get(i, 0.0))
            )
            if i in ended:
                self.finished += 1
            else:
                still.append(s)
            s.segment += 1
        self.active = still
        self.last_rewards = rewards
        self.last_account = {
            "generate": t_gen - t0,  # refill (reset + chat template) and the engine's window
            "score": t_score - t_gen,  # the game's reward and the judge's, for the finished sequences
            "segments": time.perf_counter() - t_score,
        }
        return segments

    def _score(self, done: list[_Seq]) -> list[float]:
        """The game's reward of each finished sequence (malformed text is penalised by the game, never
        raised), plus the judge's where the game needs one."""
        if not done:
            return []
        eps, rewards = [], []
        for s in done:
            text = self.engine.tokenizer.decode(s.tokens, skip_special_tokens=True)
            result = s.env.step(text)
            rewards.append(float(result.reward))
            info = {
                k: v for k, v in result.info.items() if isinstance(v, (str, int, float, bool)) or v is None
            }
            source = result.info.get("data_source") or getattr(s.env, "data_source", None)
            ep = Episode(
                job_id=self.job_id,
                env=self.env_name,
                seed=s.seed,
                group_id=s.group_id,
                done=True,
                data_source=str(source) if source else None,
                turns=[
                    Turn(
                        role=s.env.roles[0],
                        content=text,
                        token_start=0,
                        token_end=len(s.tokens),
                        reward=result.reward,
                        info=info,
                    )
                ],
                info={"observation": s.observation[:4000]},
            )
            if result.info.get("ground_truth") is not None:
                ep.ground_truth = str(result.info["ground_truth"])
            eps.append(ep)
        if self.scorer:
            for i, extra in enumerate(self.scorer(eps)):
                rewards[i] += float(sum(extra.values()))
        return rewards

    def _segment(self, s: _Seq, start: int, done: bool, finish: str, reward: float) -> Trajectory:
        n_p, n = len(s.prompt), len(s.prompt) + len(s.tokens)
        mask = np.zeros(n, dtype=np.uint8)
        mask[n_p + start :] = 1  # policy loss on the current window only
        rewards = np.zeros(n, dtype=np.float32)
        if done:
            rewards[-1] = reward
        return Trajectory(
            job_id=self.job_id,
            episode_id=s.episode_id,
            group_id=s.group_id,
            segment=s.segment,
            env=self.env_name,
            data_source=getattr(s.env, "data_source", None),
            token_ids=s.prompt + s.tokens,
            logprobs=[0.0] * n_p + [min(0.0, x) for x in s.logprobs],
            versions=[NOT_GENERATED] * n_p + s.versions,
            loss_mask=mask,
            rewards=rewards,
            prompt_len=n_p,
            finish_reason=("stop" if finish == "stop" else "length") if done else "window",
            reward=reward,
            meta={"seed": s.seed, "window_start": n_p + start},
        )
