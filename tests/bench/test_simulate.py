"""bench.simulate: the discrete-event model of the pipeline, its calibration from a bench result, the
benchmark-shape check and the GPU projection (pure Python + numpy; the whole file runs in seconds)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench import simulate as sim
from bench.simulate import Params, compare, counts, decode_steps, simulate, with_params
from bench.simulate_fit import PROJECT, calibrate, check, project

BASELINE = Path(__file__).parents[2] / "bench" / "baselines" / "2026-11-23-cpu2-vm.json"
FREE_LEARNER = dict(learner_s_per_token=0.0, learner_step_s=0.0, learner_get_s_per_item=0.0, push_s=0.0)


def test_decode_steps_are_lock_step_with_a_fifo_active_set():
    assert decode_steps(np.array([5, 1, 2]), cap=0) == 5  # all at once: the longest
    # cap 2: [3, 1] start; at step 1 the third starts (ends 2), at 2 the fourth (ends 3)
    assert decode_steps(np.array([3, 1, 1, 1]), cap=2) == 3
    assert decode_steps(np.array([4, 4, 4]), cap=1) == 12
    assert decode_steps(np.array([], dtype=np.int64), cap=4) == 0


def test_deterministic_for_a_seed_and_the_same_lengths_in_every_mode():
    p = Params(steps=8)
    assert simulate(p, seed=3) == simulate(p, seed=3)
    assert simulate(p, seed=3) != simulate(p, seed=4)
    # every mode plays the same episode stream: sync and async-full-episodes make the same calls
    a, b = sim._Sim(replace(p, mode="sync"), 3), sim._Sim(replace(p, mode="async-full-episodes"), 3)
    a.run(), b.run()
    n = min(len(a.calls), len(b.calls))
    assert n >= p.steps and a.calls[:n] == b.calls[:n]
    w = counts(replace(p, mode="async-windows"), seeds=1)
    assert w["S"] <= p.window_tokens and w["items"] >= p.groups_per_step * p.group_size


def test_sync_never_overlaps_generation_and_training():
    for p in (Params(mode="sync", steps=10), replace(PROJECT, mode="sync", steps=3, batch_size=512)):
        r = simulate(p)
        learner_busy, rollout_busy = 1 - r["learner_idle"], 1 - r["rollout_idle"]
        assert learner_busy + rollout_busy <= 1.0 + 1e-9  # one side idles while the other works
        assert r["learner_idle"] > 0.3 and r["rollout_idle"] > 0.2
        assert r["finished_per_step"] == p.batch_size  # sync trains whole episodes only


def test_more_generation_cost_means_more_learner_idle_in_sync():
    base = Params(mode="sync", steps=10)
    slow = replace(base, decode_c_s=base.decode_c_s * 4)
    assert simulate(slow)["learner_idle"] > simulate(base)["learner_idle"]
    assert simulate(slow)["traj_per_s"] < simulate(base)["traj_per_s"]


def test_with_a_free_learner_async_is_at_least_sync():
    p = replace(Params(steps=12), **FREE_LEARNER)
    out = compare(p, seeds=2)
    assert out["async-full-episodes"]["ratio_vs_sync"] >= 1.0  # the same calls, without the barrier
    assert out["async-full-episodes"]["learner_idle"] > 0.9  # nothing to do but wait
    # windows add calls (overhead, prompts of refills) per episode; they pay off once a decode step
    # has a fixed cost, so that the straggler tail of a sync batch is not free
    for a in (2e-3, 1e-2):
        q = replace(p, decode_a_s=a, prefix_cache=True)
        assert compare(q, ("sync", "async-windows"), seeds=2)["async-windows"]["ratio_vs_sync"] >= 1.0


def test_windows_beat_full_episodes_under_a_long_tail_and_batch_dependent_decode():
    p = Params(
        steps=12,
        sigma=1.5,
        median_tokens=64,
        max_response_tokens=4096,
        window_tokens=128,
        groups_per_step=4,
        groups_per_call=4,
        batch_size=64,
        decode_a_s=5e-3,  # the step cost hardly depends on the batch: stragglers waste it
        decode_c_s=1e-5,
        prefill_s_per_token=1e-6,
        **FREE_LEARNER,
    )
    out = compare(p, seeds=2)
    assert out["async-windows"]["traj_per_s"] > 1.5 * out["async-full-episodes"]["traj_per_s"]
    assert out["async-windows"]["ratio_vs_sync"] > out["async-full-episodes"]["ratio_vs_sync"] > 1.0


def test_the_staleness_gate_bounds_the_queue():
    p = Params(steps=10, learner_s_per_token=1e-2)  # a very slow learner: the rollout is gated
    s = sim._Sim(p, 0)
    peak = 0

    def watch(arg, on_done=s._on_done):
        nonlocal peak
        on_done(arg)
        peak = max(peak, s.queue.n)

    s._on_done = watch
    r = s.run()
    ahead = max(1, p.max_staleness) * p.batch_size
    assert peak < ahead + 2 * p.batch_size  # at most one call per replica beyond the bound
    assert r["rollout_idle"] > 0.8 and r["learner_idle"] < 0.2


def test_calibrate_the_committed_baseline_falls_back_to_stated_defaults(capsys):
    cal = calibrate(BASELINE)
    printed = capsys.readouterr().out
    assert "default: push_s = 0" in printed and "default: learner_step_s = 0" in printed
    assert "1 / P2's items/s" in printed
    p = cal.params
    assert (p.batch_size, p.group_size, p.window_tokens, p.max_staleness) == (16, 16, 32, 2)
    assert (p.median_tokens, p.max_response_tokens, p.steps) == (32, 256, 20)
    assert p.decode_c_s > 0 and p.learner_s_per_token > 0 and p.learner_get_s_per_item > 0
    assert p.decode_a_s >= 0 and p.prefill_s_per_token >= 0


def test_check_on_the_baseline_is_within_15_percent(capsys):
    out = check(BASELINE, verbose=True)
    assert "goal: every mode within 15%: met" in capsys.readouterr().out
    assert out["within_goal"] and set(out["rows"]) == {"sync", "async"}
    assert out["ratio"]["predicted"] == pytest.approx(out["ratio"]["measured"], rel=0.15)


def _synthetic(truth: Params) -> dict:
    """A result file whose P1 was measured on a pipeline with the rates of `truth` (time account,
    P2, P3 and P5 included), built from the model itself."""
    n = truth.steps - 1
    runs = {}
    for bench_mode, mode in sim.BENCH_MODES.items():
        r = simulate(replace(truth, mode=mode))
        period = r["s_per_step"]
        fb = truth.learner_s_per_token * r["encoded_tokens_per_step"]
        runs[bench_mode] = {
            "wall_s": period * n,
            "finished": r["finished_per_step"] * n,
            "traj_per_s": r["traj_per_s"],
            "learner_idle": r["learner_idle"],
            "rollout_idle": r["rollout_idle"],
            "time_account": {
                "collate": 0.5 * truth.learner_step_s,
                "forward": 0.4 * fb,
                "backward": 0.6 * fb,
                "optimizer": 0.5 * truth.learner_step_s,
                "push_rendezvous": 0.25 * truth.push_s,
                "push_transfer": 0.75 * truth.push_s,
                "wait": r["learner_idle"] * period,
            },
        }
    spec = {
        "rollout": {"replicas": 1, "group_size": 16, "groups_per_step": 1, "max_response_tokens": 256},
        "asynchrony": {"window_tokens": 32, "max_staleness": 2},
        "learner": {"batch_size": 16},
    }
    spec["rollout"]["response_lengths"] = {"median_tokens": 32, "sigma": 1.0}
    return {
        "results": [
            {"id": "P1", "details": {"runs": [runs], "spec": spec}, "error": None},
            {"id": "P2", "details": {"ours_per_s": 1.0 / truth.queue_s_per_item}, "error": None},
            {"id": "P3", "details": {"ours_s": 0.5, "bytes": 5e8}, "error": None},
            {"id": "P5", "details": {"ours_tok_per_s": 80.0}, "error": None},
        ]
    }


def test_calibrate_a_synthetic_result_with_every_field_recovers_the_learner():
    truth = replace(Params(payoff_lengths=True), learner_s_per_token=1.5e-4, learner_step_s=0.05, push_s=0.04)
    data = _synthetic(truth)
    cal = calibrate(json.loads(json.dumps(data)), verbose=False)
    assert not [n for n in cal.notes if "push_s = 0" in n or "learner_step_s = 0" in n]
    assert any("time account" in n for n in cal.notes)
    p = cal.params
    assert p.push_s == pytest.approx(truth.push_s)
    assert p.learner_s_per_token == pytest.approx(truth.learner_s_per_token, rel=0.02)
    assert p.learner_step_s == pytest.approx(truth.learner_step_s, abs=0.01)
    assert p.queue_s_per_item == pytest.approx(truth.queue_s_per_item)
    assert check(data, verbose=False)["within_goal"]


def test_calibrate_without_p1_keeps_the_defaults_and_scales_decode_by_p5(capsys):
    cal = calibrate({"results": [{"id": "P5", "details": {"ours_tok_per_s": 80.0}}]})
    assert "no P1 with both modes" in capsys.readouterr().out
    p = cal.params
    assert 16 / (p.decode_a_s + 16 * p.decode_c_s) == pytest.approx(80.0)


def test_project_prints_its_assumptions_and_a_ratio(capsys):
    small = replace(PROJECT, steps=3, batch_size=1024, groups_per_step=8, groups_per_call=8)
    out = project(small)
    text = capsys.readouterr().out
    assert "assumptions:" in text and "T-PPO paper: up to 2.5x" in text and "sensitivity" in text
    assert out["ratio_async_windows_vs_sync"] > 1.0
    assert out["rates"]["learner_encoded_tok_s"] == pytest.approx(48000)
    json.dumps(out)  # --json prints it


def test_cli_run_with_params_and_bad_params(capsys):
    assert sim.main(["run", "--mode", "sync", "--param", "steps=4", "--param", "prefix_cache=true"]) == 0
    assert "sync" in capsys.readouterr().out
    assert with_params(Params(), ["max_batch=8", "sigma=0.5"]).max_batch == 8
    with pytest.raises(SystemExit):
        with_params(Params(), ["nope=1"])
    with pytest.raises(ValueError):
        with_params(Params(), ["prefix_cache=maybe"])
