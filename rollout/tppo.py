"""T-PPO truncated rollout with successive batching (spec §2.2).

Each `step()` generates at most `window` new tokens for every active sequence. A sequence that emits EOS,
or reaches `max_response_tokens` (L_max), is finished: the game scores it and it leaves the batch. The
others stay and continue at the next step — under whatever policy version the engine has by then, and
every token keeps the version that produced it. Freed slots are refilled with new prompts × group_size,
so the batch stays full. Every step emits one Trajectory *segment* per active sequence: the whole
sequence so far, with the loss mask on the tokens of this window only (earlier windows were trained on
at earlier steps) and finish_reason 'window' until it finishes.
"""
from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rollout.engine import Engine, GenRequest, SamplingParams
from services.schemas import NOT_GENERATED, Trajectory, new_id


@dataclass
class _Seq:
    env: object
    episode_id: str
    group_id: str
    seed: int
    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    segment: int = 0


class WindowedRollout:
    def __init__(self, engine: Engine, env_factory: Callable[[], object], job_id: str, env_name: str,
                 batch_size: int, group_size: int, window: int, max_response_tokens: int,
                 sampling: SamplingParams | None = None, first_seed: int = 0,
                 scorer: Callable[[object, str], float] | None = None):
        if window > max_response_tokens:
            raise ValueError(f"window ({window}) is larger than max_response_tokens ({max_response_tokens})")
        self.engine, self.env_factory, self.job_id, self.env_name = engine, env_factory, job_id, env_name
        self.batch_size, self.group_size = batch_size, group_size
        self.window, self.max_len = window, max_response_tokens
        self.sampling = sampling or SamplingParams()
        self.scorer = scorer
        self._seeds = itertools.count(first_seed)
        self.active: list[_Seq] = []
        self.finished = 0

    def _refill(self) -> None:
        while len(self.active) < self.batch_size:
            seed, group = next(self._seeds), new_id()
            for _ in range(self.group_size):
                env = self.env_factory()
                obs = env.reset(seed)
                role = env.current_role
                prompt = self.engine.chat_prompt_ids([{"role": "user", "content": obs[role]}])
                self.active.append(_Seq(env, new_id(), group, seed, prompt))

    def step(self) -> list[Trajectory]:
        """One T-PPO step: ≤ window tokens for every active sequence; returns this step's segments."""
        self._refill()
        reqs = [GenRequest(prompt_ids=s.prompt + s.tokens, params=self.sampling.model_copy(update={
                    "max_tokens": min(self.window, self.max_len - len(s.tokens)),
                    "seed": None if self.sampling.seed is None else
                    self.sampling.seed + zlib.crc32(f"{s.seed}/{s.episode_id}/{s.segment}".encode())}))
                for s in self.active]
        outs = self.engine.generate(reqs)
        segments, still = [], []
        for s, out in zip(self.active, outs):
            start = len(s.tokens)
            s.tokens += out.token_ids
            s.logprobs += out.logprobs
            s.versions += out.versions
            done = out.finish_reason == "stop" or len(s.tokens) >= self.max_len
            reward = self._score(s) if done else 0.0
            segments.append(self._segment(s, start, done, out.finish_reason, reward))
            s.segment += 1
            if done:
                self.finished += 1
            else:
                still.append(s)
        self.active = still
        return segments

    def _score(self, s: _Seq) -> float:
        text = self.engine.tokenizer.decode(s.tokens, skip_special_tokens=True)
        result = s.env.step(text)  # malformed text is penalised by the game, never raised
        extra = self.scorer(s.env, text) if self.scorer else 0.0
        return float(result.reward) + float(extra)

    def _segment(self, s: _Seq, start: int, done: bool, finish: str, reward: float) -> Trajectory:
        n_p, n = len(s.prompt), len(s.prompt) + len(s.tokens)
        mask = np.zeros(n, dtype=np.uint8)
        mask[n_p + start:] = 1  # policy loss on the current window only
        rewards = np.zeros(n, dtype=np.float32)
        if done:
            rewards[-1] = reward
        return Trajectory(
            job_id=self.job_id, episode_id=s.episode_id, group_id=s.group_id, segment=s.segment,
            env=self.env_name, data_source=getattr(s.env, "data_source", None),
            token_ids=s.prompt + s.tokens, logprobs=[0.0] * n_p + [min(0.0, x) for x in s.logprobs],
            versions=[NOT_GENERATED] * n_p + s.versions, loss_mask=mask, rewards=rewards, prompt_len=n_p,
            finish_reason=("stop" if finish == "stop" else "length") if done else "window",
            reward=reward, meta={"seed": s.seed, "window_start": n_p + start})
