"""A trivially learnable game for learner tests: the policy's first generated token picks an action of
a fixed GTAlign payoff matrix (token id mod 3 -> DA / CQ / AQ for a DQ user) and the reward is the
action's Cobb-Douglas welfare. A random tiny model starts near 1/3 on each action; learning shows up as
probability mass moving to the welfare-maximising action."""

from __future__ import annotations

import threading

import numpy as np
import torch

from games.payoff import ACTIONS, PayoffMatrix
from games.welfare import cobb_douglas
from rollout.engine import GenRequest, SamplingParams
from services.queue import QueueFull, TrajectoryQueue
from services.schemas import NOT_GENERATED, Trajectory, new_id

MATRIX = PayoffMatrix(
    {
        "DQ_DA": (2.0, 1.0),
        "DQ_CQ": (1.0, 1.5),
        "DQ_AQ": (4.0, 3.6),
        "VQ_DA": (1.0, 1.0),
        "VQ_CQ": (1.0, 1.0),
        "VQ_AQ": (1.0, 1.0),
    }
)
LLM, USER = MATRIX.bimatrix()
WELFARE = np.asarray(cobb_douglas(USER[0], LLM[0]))  # DQ row, per action
BEST = int(WELFARE.argmax())
PROMPT = [{"role": "user", "content": "Pick the action that maximises our mutual welfare."}]


def reward_of(token: int) -> float:
    return float(WELFARE[token % 3] / WELFARE.max())


def best_action_prob(model, tokenizer) -> float:
    ids = tokenizer.apply_chat_template(
        PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.no_grad():
        p = torch.softmax(model(ids).logits[0, -1].float(), -1)
    return float(p[BEST::3].sum())


def produce_group(
    engine, queue: TrajectoryQueue, job_id: str, group_size: int, seed: int, timeout_s: float | None = None
) -> None:
    prompt = engine.chat_prompt_ids(PROMPT)
    outs = engine.generate(
        [
            GenRequest(prompt_ids=prompt, params=SamplingParams(max_tokens=1, seed=seed * 100 + i))
            for i in range(group_size)
        ]
    )
    group, trajs = new_id(), []
    for o in outs:
        r = reward_of(o.token_ids[0])
        n = len(prompt) + 1
        trajs.append(
            Trajectory(
                job_id=job_id,
                episode_id=new_id(),
                group_id=group,
                env="welfare-game",
                token_ids=prompt + o.token_ids,
                logprobs=[0.0] * len(prompt) + o.logprobs,
                versions=[NOT_GENERATED] * len(prompt) + o.versions,
                loss_mask=[0] * len(prompt) + [1],
                rewards=[0.0] * (n - 1) + [r],
                prompt_len=len(prompt),
                reward=r,
                finish_reason="length",
                meta={"action": ACTIONS[o.token_ids[0] % 3]},
            )
        )
    queue.put_many(trajs, timeout_s=timeout_s)


class Producer(threading.Thread):
    """Rollout side in a thread: keeps the queue fed until stopped (async: never waits for the learner)."""

    def __init__(self, engine, queue, job_id, group_size):
        super().__init__(daemon=True)
        self.engine, self.queue, self.job_id, self.group_size = engine, queue, job_id, group_size
        self.stop = threading.Event()
        self.groups = 0

    def run(self):
        while not self.stop.is_set():
            try:  # short waits, so a stop request is seen while the queue is full
                produce_group(
                    self.engine, self.queue, self.job_id, self.group_size, self.groups, timeout_s=1.0
                )
            except QueueFull:
                continue
            self.groups += 1
