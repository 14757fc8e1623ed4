"""Kill the learner process mid-run (SIGKILL, between two checkpoints), resume it, and show that the final
model trained on every trajectory exactly once: the committed checkpoints cover all of them, none twice."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from learner.trainer import LearnerConfig
from rollout.engine import make_engine
from services.queue import QueueConfig, TrajectoryQueue
from tests.learner.welfare_game import produce_group


def _learner(cfg: LearnerConfig) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import json, sys
        from learner.trainer import Learner, LearnerConfig
        learner = Learner(LearnerConfig.model_validate_json({cfg.model_dump_json()!r}))
        learner.restore()
        print("resumed", learner.step_no, len(learner.held), flush=True)
        learner.run(on_step=lambda s: print("step", s["step"], flush=True))
        print("done", learner.step_no, flush=True)
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_kill_and_resume_trains_each_trajectory_exactly_once(
    redis_url, redis_client, job_id, tiny_model_path, tmp_path
):
    engine = make_engine("transformers", tiny_model_path, threads=1)
    queue = TrajectoryQueue(redis_client, job_id, QueueConfig(max_len=1000))
    for g in range(12):
        produce_group(engine, queue, job_id, group_size=4, seed=g)
    sent = {t for t in redis_client.smembers(queue.ids_key)}
    assert len(sent) == 48
    cfg = LearnerConfig(
        job_id=job_id,
        redis_url=redis_url,
        model=tiny_model_path,
        algorithm="grpo",
        batch_size=8,
        group_size=4,
        learning_rate=1e-3,
        steps=6,
        checkpoint_every=2,
        checkpoint_dir=str(tmp_path / "ckpt"),
        keep_checkpoints=100,
        push_weights=False,
        get_timeout_s=30,
        queue=QueueConfig(max_len=1000, claim_idle_ms=600_000),
    )
    first = _learner(cfg)
    lines = []
    try:
        for line in first.stdout:
            lines.append(line.strip())
            if line.startswith("step 3"):
                break  # step 2 is committed, step 3 trained but not yet checkpointed
    finally:
        first.kill()
        first.wait()
    assert "step 3" in lines and queue.stats()["pending"] >= 8
    second = _learner(cfg)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    resumed = out.splitlines()[0].split()
    assert resumed[:2] == ["resumed", "2"] and int(resumed[2]) >= 8  # step 3's entries come back
    assert out.splitlines()[-1] == "done 6"
    trained = []
    for state in sorted((tmp_path / "ckpt").glob("step-*/state.json")):
        trained += json.loads(state.read_text())["trained_ids"]
    assert len(trained) == len(set(trained)) == 48, "a trajectory was trained twice or lost"
    assert {t.encode() for t in trained} == sent
    s = queue.stats()
    assert (s["depth"], s["pending"], s["acked"]) == (0, 0, 48)
