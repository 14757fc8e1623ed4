"""Episode runner: plays games/ environments with an engine and turns them into Episodes + Trajectories.

- Groups: `group_size` agents share one seed (GRL / GRPO groups); a group's episodes are stepped in
  lock-step so each turn is one batched generate call.
- Multi-turn: each role keeps its own token context. The tokens between two assistant turns (end of turn,
  the next observation, the generation prompt) come from the model's chat template, rendered once per
  turn, so the learner sees exactly the token sequence the engine generated from.
- Multi-role: one policy plays every role, or `engines` maps roles to different policies. Each role yields
  its own Trajectory (role-tagged), as SPIRAL-style role-conditioned advantages need.
- Rewards: the sum of a role's turn rewards sits on its last generated token (GRL); a `scorer` (the judge)
  adds the rewards of games that need one (GTAlign, red-team). A malformed output never raises: the game
  penalises it and the count lands in `Episode.info`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rollout.engine import Engine, GenRequest, SamplingParams
from services.jobspec import LengthProfile
from services.schemas import NOT_GENERATED, Episode, Trajectory, Turn, new_id

Scorer = Callable[[list[Episode]], list[dict[str, float]]]  # extra reward per role, one dict per episode


@dataclass
class _RoleTrack:
    """The token context of one role in one episode."""

    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)
    prompt_len: int = 0
    finish: str = "stop"

    def extend(self, ids: list[int]) -> None:
        self.tokens += ids
        self.logprobs += [0.0] * len(ids)
        self.versions += [NOT_GENERATED] * len(ids)
        self.mask += [0] * len(ids)


class EpisodeRunner:
    def __init__(
        self,
        engine: Engine,
        env_factory: Callable[[], object],
        job_id: str,
        env_name: str,
        sampling: SamplingParams | None = None,
        max_turns: int = 8,
        engines: dict[str, Engine] | None = None,
        scorer: Scorer | None = None,
        system_prompt: str | None = None,
        lengths: LengthProfile | None = None,
    ):
        self.engine, self.env_factory, self.job_id, self.env_name = engine, env_factory, job_id, env_name
        self.sampling = sampling or SamplingParams()
        self.max_turns, self.engines, self.scorer = max_turns, engines or {}, scorer
        self.system_prompt, self.lengths = system_prompt, lengths

    def engine_for(self, role: str) -> Engine:
        return self.engines.get(role, self.engine)

    # ------------------------------------------------------------------ public
    def run_group(self, seed: int, group_size: int) -> tuple[list[Episode], list[Trajectory]]:
        group = new_id()
        envs = [self.env_factory() for _ in range(group_size)]
        episodes = [Episode(job_id=self.job_id, env=self.env_name, seed=seed, group_id=group) for _ in envs]
        tracks: list[dict[str, _RoleTrack]] = [{} for _ in envs]
        obs = [env.reset(seed) for env in envs]
        for ep, env, o in zip(episodes, envs, obs):
            ep.data_source = getattr(env, "data_source", None) or ep.data_source
            ep.info["observation"] = o[envs[0].current_role][:4000]  # what the judge shows as the question
        for _ in range(self.max_turns * max(len(getattr(envs[0], "roles", ("p",))), 1)):
            live = [i for i, env in enumerate(envs) if not env.done]
            if not live:
                break
            by_engine: dict[int, list[tuple[int, str]]] = {}
            for i in live:
                role = envs[i].current_role
                by_engine.setdefault(id(self.engine_for(role)), []).append((i, role))
            for batch in by_engine.values():
                self._turn(batch, envs, episodes, tracks, obs, seed)
        for i, env in enumerate(envs):
            ep = episodes[i]
            ep.done = env.done
            ep.rewards = {r: float(v) for r, v in env.returns.items()}
            if not env.done:
                ep.info["truncated_turns"] = True
        if self.scorer:
            for ep, extra in zip(episodes, self.scorer(episodes)):
                for role, v in extra.items():
                    ep.rewards[role] = ep.rewards.get(role, 0.0) + float(v)
        trajs = [t for ep, tr in zip(episodes, tracks) for t in self._trajectories(ep, tr)]
        return episodes, trajs

    # ------------------------------------------------------------------ one turn
    def _turn(self, batch, envs, episodes, tracks, obs, seed) -> None:
        engine = self.engine_for(batch[0][1])
        requests = []
        for i, role in batch:
            track = tracks[i].setdefault(role, _RoleTrack())
            self._observe(engine, track, obs[i][role])
            update = {"seed": None if self.sampling.seed is None else self.sampling.seed + seed * 1000 + i}
            if self.lengths is not None:  # benchmarks: the member's drawn length, EOS ignored
                update.update(
                    max_tokens=self.lengths.draw(seed, i, self.sampling.max_tokens), ignore_eos=True
                )
            params = self.sampling.model_copy(update=update)
            requests.append(GenRequest(prompt_ids=track.tokens, params=params))
        outputs = engine.generate(requests)
        for (i, role), out in zip(batch, outputs):
            track, tok = tracks[i][role], engine.tokenizer
            text = tok.decode(out.token_ids, skip_special_tokens=True)
            start = len(track.tokens)
            track.tokens += out.token_ids
            track.logprobs += out.logprobs
            track.versions += out.versions
            track.mask += [1] * len(out.token_ids)
            track.finish = out.finish_reason
            track.messages.append({"role": "assistant", "content": text})
            result = envs[i].step(text)
            obs[i] = result.observation
            ep = episodes[i]
            ep.turns.append(
                Turn(
                    role=role,
                    content=text,
                    token_start=start,
                    token_end=len(track.tokens),
                    version=out.versions[-1] if out.versions else None,
                    reward=result.reward,
                    info={
                        k: v
                        for k, v in result.info.items()
                        if isinstance(v, (str, int, float, bool)) or v is None
                    },
                )
            )
            ep.info["n_invalid"] = int(ep.info.get("n_invalid", 0)) + int(result.info.get("n_invalid", 0))
            if result.info.get("success"):
                ep.success = True
            for key in ("data_source", "ground_truth"):
                if result.info.get(key) is not None:
                    setattr(ep, key, str(result.info[key]))
        for i, _ in batch:
            if envs[i].done and episodes[i].success is None:
                episodes[i].success = False

    def _observe(self, engine: Engine, track: _RoleTrack, observation: str) -> None:
        """Append the chat-template tokens that carry `observation` to the role's context."""
        tok = engine.tokenizer
        if not track.messages:
            if self.system_prompt:
                track.messages.append({"role": "system", "content": self.system_prompt})
            track.messages.append({"role": "user", "content": observation})
            track.extend(engine.chat_prompt_ids(track.messages))
            track.prompt_len = len(track.tokens)
            return
        before = tok.apply_chat_template(track.messages, tokenize=False)
        track.messages.append({"role": "user", "content": observation})
        after = tok.apply_chat_template(track.messages, tokenize=False, add_generation_prompt=True)
        eos = tok.eos_token or ""
        cut = before.rfind(eos) + len(eos) if eos and eos in before else -1
        if not after.startswith(before) or cut < 0:
            raise ValueError(
                "the chat template does not render turns incrementally; "
                "multi-turn token accounting needs one that does (ChatML-like)"
            )
        if track.mask and track.mask[-1] == 1 and track.tokens[-1] != tok.eos_token_id:
            track.extend([tok.eos_token_id])  # the turn was cut at max_tokens: close it as the template does
        track.extend(tok(before[cut:] + after[len(before) :], add_special_tokens=False)["input_ids"])

    def _trajectories(self, ep: Episode, tracks: dict[str, _RoleTrack]) -> list[Trajectory]:
        out = []
        roles = sorted(tracks)
        for role in roles:
            tr = tracks[role]
            if not any(tr.mask):
                continue
            rewards = np.zeros(len(tr.tokens), dtype=np.float32)
            last = max(i for i, m in enumerate(tr.mask) if m)
            rewards[last] = ep.rewards.get(role, 0.0)
            out.append(
                Trajectory(
                    job_id=self.job_id,
                    episode_id=ep.id,
                    group_id=ep.group_id,
                    role=role,
                    env=self.env_name,
                    data_source=ep.data_source,
                    token_ids=tr.tokens,
                    logprobs=np.minimum(tr.logprobs, 0.0),
                    versions=tr.versions,
                    loss_mask=tr.mask,
                    rewards=rewards,
                    prompt_len=tr.prompt_len,
                    finish_reason="stop" if tr.finish == "stop" else "length",
                    reward=ep.rewards.get(role, 0.0),
                    role_ids=[roles.index(role)] * len(tr.tokens),
                    roles=roles,
                    meta={
                        "seed": ep.seed,
                        "turns": len(ep.turns),
                        "success": bool(ep.success),
                        "n_invalid": int(ep.info.get("n_invalid", 0)),
                    },
                )
            )
        return out
