"""The transformers engine on the tiny model: logprobs, batching, version tags, update modes."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from rollout.engine import EngineError, GenRequest, SamplingParams, make_engine


@pytest.fixture(scope="module")
def engine(tiny_model_path):
    return make_engine("transformers", tiny_model_path, threads=1)


def _prompt(engine, text="What is 2 + 3?"):
    return engine.chat_prompt_ids([{"role": "user", "content": text}])


def _perturbed(engine, seed):
    g = torch.Generator().manual_seed(seed)
    return [
        (n, p.detach() + 0.3 * torch.randn(p.shape, generator=g).to(p.device))
        for n, p in engine.model.state_dict().items()
    ]


def test_logprobs_match_a_forward_pass_and_batching_does_not_change_greedy(engine):
    p1, p2 = _prompt(engine), _prompt(engine, "A much longer question about payoff matrices and games?")
    g = SamplingParams(max_tokens=12, temperature=0)
    alone = engine.generate([GenRequest(prompt_ids=p1, params=g)])[0]
    both = engine.generate([GenRequest(prompt_ids=p2, params=g), GenRequest(prompt_ids=p1, params=g)])
    assert both[1].token_ids == alone.token_ids  # left padding is invisible
    s = SamplingParams(max_tokens=16, temperature=1.0, seed=7)
    out = engine.generate([GenRequest(prompt_ids=p1, params=s)])[0]
    with torch.no_grad():
        ids = torch.tensor([p1 + out.token_ids], device=engine.device)
        lp = torch.log_softmax(engine.model(ids).logits[0].float(), -1)
    ref = [float(lp[len(p1) - 1 + k, t]) for k, t in enumerate(out.token_ids)]
    assert max(abs(a - b) for a, b in zip(ref, out.logprobs)) < 1e-4
    assert engine.generate([GenRequest(prompt_ids=p1, params=s)])[0].token_ids == out.token_ids  # seeded


def test_stop_tokens_and_finish_reasons(engine):
    p = _prompt(engine)
    first = engine.generate([GenRequest(prompt_ids=p, params=SamplingParams(max_tokens=5, temperature=0))])[0]
    assert first.finish_reason == "length" and len(first.token_ids) == 5
    stop_id = first.token_ids[2]
    stop = SamplingParams(max_tokens=5, temperature=0, stop_token_ids=[stop_id])
    out = engine.generate([GenRequest(prompt_ids=p, params=stop)])[0]
    assert (
        out.finish_reason == "stop" and out.token_ids == first.token_ids[: first.token_ids.index(stop_id) + 1]
    )


def test_wait_mode_finishes_in_flight_on_the_old_version(engine):
    base = engine.version
    p = _prompt(engine)
    res = {}
    th = threading.Thread(
        target=lambda: res.update(
            out=engine.generate(
                [GenRequest(prompt_ids=p, params=SamplingParams(max_tokens=400, temperature=1.0, seed=1))]
            )[0]
        )
    )
    th.start()
    time.sleep(0.05)
    engine.load_weights(_perturbed(engine, 1), version=base + 1, mode="wait")
    th.join()
    assert set(res["out"].versions) == {base}
    assert engine.version == base + 1


def test_keep_mode_switches_mid_generation_and_tags_tokens(engine):
    base = engine.version
    p = _prompt(engine)
    res = {}
    th = threading.Thread(
        target=lambda: res.update(
            out=engine.generate(
                [GenRequest(prompt_ids=p, params=SamplingParams(max_tokens=400, temperature=1.0, seed=2))]
            )[0]
        )
    )
    th.start()
    time.sleep(0.1)
    engine.load_weights(_perturbed(engine, 2), version=base + 1, mode="keep")
    th.join()
    v = res["out"].versions
    assert v[0] == base and v[-1] == base + 1 and v == sorted(v)  # switched once, between two steps


def test_bad_update_is_rejected_before_touching_weights(engine):
    before = {n: t.clone() for n, t in engine.model.state_dict().items()}
    name = next(iter(before))
    with pytest.raises(EngineError, match="shape"):
        engine.load_weights([(name, torch.zeros(3, 3))], version=99)
    with pytest.raises(EngineError, match="unknown weight"):
        engine.load_weights([("no.such.weight", torch.zeros(1))], version=99)
    assert engine.version != 99
    assert all(torch.equal(before[n], t) for n, t in engine.model.state_dict().items())
