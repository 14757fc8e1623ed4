"""The learner as a real Ray Train TorchTrainer on the shared Ray session, fed by a live producer."""

from __future__ import annotations

import pytest
import torch

from learner.ray_train import TrainLaunch, fit
from learner.trainer import LearnerConfig
from rollout.engine import make_engine
from services.queue import QueueConfig, TrajectoryQueue
from services.weights import WeightReceiver, WeightSyncConfig
from tests.learner.welfare_game import Producer, best_action_prob


@pytest.mark.slow
def test_torch_trainer_trains_pushes_and_exports(
    ray_session, redis_url, redis_client, job_id, tiny_model_path, tmp_path
):
    engine = make_engine("transformers", tiny_model_path, threads=1)
    sync = WeightSyncConfig(timeout_s=30, heartbeat_s=0.2)
    receiver = WeightReceiver(
        redis_client,
        job_id,
        "rollout-0",
        config=sync,
        apply=lambda named, v: engine.load_weights(named, v, "keep"),
    ).start()
    producer = Producer(engine, TrajectoryQueue(redis_client, job_id, QueueConfig(max_len=64)), job_id, 8)
    producer.start()
    cfg = LearnerConfig(
        job_id=job_id,
        redis_url=redis_url,
        model=tiny_model_path,
        algorithm="grpo",
        batch_size=16,
        group_size=8,
        learning_rate=1e-2,
        steps=12,
        checkpoint_every=4,
        checkpoint_dir=str(tmp_path / "ckpt"),
        weight_sync=sync,
        get_timeout_s=60,
        queue=QueueConfig(max_len=64, max_staleness=4),
    )
    try:
        result = fit(
            cfg,
            TrainLaunch(workers=1, cpus_per_worker=0.5, storage_path=str(tmp_path / "ray")),
            export_dir=str(tmp_path / "final"),
        )
    finally:
        producer.stop.set()
        producer.join(30)
        receiver.stop()
    assert result.error is None
    assert result.metrics["step"] == 12 and result.metrics["version"] == 12
    assert result.checkpoint is not None
    assert engine.version == 12
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    tok = AutoTokenizer.from_pretrained(tmp_path / "final")
    last = sorted((tmp_path / "ckpt").glob("step-*"))[-1]
    assert last.name == "step-00000012"
    # the exported HF directory holds the trained policy: equal to the last checkpoint, not the start
    ckpt = AutoModelForCausalLM.from_pretrained(last / "policy").state_dict()
    start = AutoModelForCausalLM.from_pretrained(tiny_model_path).state_dict()
    assert all(torch.equal(t, ckpt[n]) for n, t in final.state_dict().items())
    assert not all(torch.equal(t, start[n]) for n, t in final.state_dict().items())
    assert best_action_prob(final, tok) > best_action_prob(
        AutoModelForCausalLM.from_pretrained(tiny_model_path), tok
    )


@pytest.mark.slow
def test_a_stalled_fit_fails_with_the_reason_without_a_full_timeout_per_retry(
    ray_session, redis_url, redis_client, job_id, tiny_model_path, tmp_path
):
    """No trajectory ever arrives: the worker fails after stall_timeout_s; Ray Train's restarts continue
    the stall clock (kept in the queue), so the fit fails after about one timeout, with the reason."""
    import time

    cfg = LearnerConfig(
        job_id=job_id,
        redis_url=redis_url,
        model=tiny_model_path,
        algorithm="grpo",
        batch_size=8,
        group_size=4,
        steps=2,
        checkpoint_dir=str(tmp_path / "ckpt"),
        stall_timeout_s=6,
        push_weights=False,
    )
    t0 = time.monotonic()
    with pytest.raises(Exception, match="no trainable trajectory for") as err:  # Ray Train's WorkerGroupError
        fit(cfg, TrainLaunch(workers=1, cpus_per_worker=0.5, max_failures=2, storage_path=str(tmp_path)))
    took = time.monotonic() - t0
    assert "none arrived; are the rollout replicas running?" in str(err.value)
    from services.errors import reason

    one_line = reason(err.value, prefix="training failed: ")  # what the job's status says
    assert one_line.startswith("training failed: LearnerError: no trainable trajectory for"), one_line
    assert "\n" not in one_line and "Traceback" not in one_line
    from services.jobs import LogEvent, read_events

    logs = [e for _, e in read_events(redis_client, job_id) if isinstance(e, LogEvent)]
    assert [e.level for e in logs] == ["warning", "error", "error", "error"]  # one per attempt
    stalled = [int(e.message.split("no trainable trajectory for ")[1].split(" s")[0]) for e in logs[1:]]
    assert stalled == sorted(stalled) and stalled[-1] <= 6 + 6, stalled  # the restarts went on counting
    print(f"stalled fit failed after {took:.0f} s; stall clock at each attempt's failure: {stalled} s")
