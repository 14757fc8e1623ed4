"""Prefix reuse in the transformers engine (KV kept between T-PPO windows): same tokens and logprobs as
recomputing every prefix, exact logprobs after weight updates under both `kv_cache_on_update` choices,
a bounded store that forgets finished sequences."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from games.registry import make_env
from rollout.engine import GenRequest, SamplingParams, make_engine
from rollout.tppo import WindowedRollout
from services.jobspec import LengthProfile

GREEDY = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)


def _engine(path, **kw):
    return make_engine("transformers", path, threads=1, **kw)


@pytest.fixture(scope="module")
def plain(tiny_model_path):
    return _engine(tiny_model_path, kv_cache_entries=0)  # recomputes every prefix


@pytest.fixture(scope="module")
def cached(tiny_model_path):
    return _engine(tiny_model_path)


def _prompts(engine, n):
    texts = ["Hi", "What is 2 + 3?", "A much longer question about payoff matrices and games, please?"]
    return [
        engine.chat_prompt_ids([{"role": "user", "content": texts[i % 3] * (1 + i // 3)}]) for i in range(n)
    ]


def _perturbed(engine, seed, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    return [
        (n, p.detach() + scale * torch.randn(p.shape, generator=g).to(p.device))
        for n, p in engine.model.state_dict().items()
    ]


def _windows(engine, prompts, steps, window=5, key="k"):
    """Windows of `window` tokens per sequence, resending prompt + tokens so far (as tppo.py does)."""
    seqs = [list(p) for p in prompts]
    outs = []
    for _ in range(steps):
        reqs = [
            GenRequest(
                prompt_ids=s, params=GREEDY.model_copy(update={"max_tokens": window}), cache_key=f"{key}{i}"
            )
            for i, s in enumerate(seqs)
        ]
        step = engine.generate(reqs)
        for s, o in zip(seqs, step):
            s += o.token_ids
        outs.append(step)
    return seqs, outs


def _close(a, b, tol=1e-4):
    return len(a) == len(b) and max((abs(x - y) for x, y in zip(a, b)), default=0.0) < tol


def _forward_logprobs(model, prompt, tokens):
    with torch.no_grad():
        ids = torch.tensor([prompt + tokens], device=next(model.parameters()).device)
        lp = torch.log_softmax(model(ids).logits[0].float(), -1)
    return [float(lp[len(prompt) - 1 + k, t]) for k, t in enumerate(tokens)]


def test_windows_with_reuse_equal_recomputed_prefixes(plain, cached):
    prompts = _prompts(plain, 5)
    before = cached.kv_stats()
    _, ref = _windows(plain, prompts, steps=4)
    _, got = _windows(cached, prompts, steps=4)
    for r_step, g_step in zip(ref, got):
        for r, g in zip(r_step, g_step):
            assert g.token_ids == r.token_ids and _close(g.logprobs, r.logprobs)
    stats = cached.kv_stats()
    assert stats["hits"] - before["hits"] == 5 * 3  # every continuation after the first window
    assert stats["reused_tokens"] > stats["hits"]
    cached.release(f"k{i}" for i in range(5))


def test_tppo_rollout_with_refills_and_long_tailed_lengths_equals_the_uncached_run(plain, cached):
    def run(engine):
        w = WindowedRollout(
            engine,
            lambda: make_env("math"),
            "job",
            "math",
            batch_size=6,
            group_size=2,
            window=4,
            max_response_tokens=20,
            sampling=SamplingParams(temperature=0),
            lengths=LengthProfile(median_tokens=6, sigma=1.0),
        )
        segs = []
        for _ in range(7):
            segs += [(t.token_ids.tolist(), t.logprobs.tolist(), t.finished) for t in w.step()]
            live = {s.episode_id for s in w.active}
            assert set(engine._kv._entries) <= live  # finished sequences were released
        return segs, w.finished

    hits = cached.kv_stats()["hits"]
    (ref, n_ref), (got, n_got) = run(plain), run(cached)
    assert cached.kv_stats()["hits"] > hits + 6
    assert n_ref == n_got > 6  # sequences finished and their slots were refilled
    assert [t for t, _, _ in got] == [t for t, _, _ in ref]
    assert all(_close(g, r) for (_, g, _), (_, r, _) in zip(got, ref))


def test_continuation_with_a_longer_or_divergent_suffix(plain, cached):
    (p,) = _prompts(plain, 1)
    first = cached.generate([GenRequest(prompt_ids=p, params=GREEDY, cache_key="m")])[0]
    turn2 = p + first.token_ids + plain.chat_prompt_ids([{"role": "user", "content": "And then?"}])
    edited = p[:-3] + [5, 6, 7]  # shares only part of the cached prefix
    for prompt in (turn2, edited):
        got = cached.generate([GenRequest(prompt_ids=prompt, params=GREEDY, cache_key="m")])[0]
        ref = plain.generate([GenRequest(prompt_ids=prompt, params=GREEDY)])[0]
        assert got.token_ids == ref.token_ids and _close(got.logprobs, ref.logprobs)
        assert _close(got.logprobs, _forward_logprobs(plain.model, prompt, got.token_ids))
    cached.release(["m"])


def _reference(path, state):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    model.load_state_dict({n: t.cpu() for n, t in dict(state).items()})
    return model


def _stale_kv_logprobs(path, old, new, prefix, tokens):
    """Logprobs of `tokens` after `prefix` when the KV of prefix[:-1] was computed under `old` weights
    and everything from prefix[-1] on under `new` (what "keep" samples from)."""
    model = _reference(path, old)
    with torch.no_grad():
        past = model(torch.tensor([prefix[:-1]]), use_cache=True).past_key_values
        model.load_state_dict(dict(new))
        lp = torch.log_softmax(
            model(torch.tensor([prefix[-1:] + tokens[:-1]]), past_key_values=past).logits[0], -1
        )
    return [float(lp[k, t]) for k, t in enumerate(tokens)]


@pytest.mark.parametrize("choice", ["keep", "recompute"])
def test_logprobs_after_an_update_between_windows_are_the_sampling_distribution(tiny_model_path, choice):
    engine = _engine(tiny_model_path, kv_cache_on_update=choice)
    (p,) = _prompts(engine, 1)
    first = engine.generate([GenRequest(prompt_ids=p, params=GREEDY, cache_key="s")])[0]
    old = {n: t.detach().cpu().clone() for n, t in engine.model.state_dict().items()}
    new = _perturbed(engine, 3)
    engine.load_weights(new, version=1, mode="wait")
    assert len(engine._kv) == (1 if choice == "keep" else 0)
    prefix = p + first.token_ids
    out = engine.generate([GenRequest(prompt_ids=prefix, params=GREEDY, cache_key="s")])[0]
    assert out.versions == [1] * len(out.token_ids)
    fresh = _forward_logprobs(engine.model, prefix, out.token_ids)
    stale = _stale_kv_logprobs(tiny_model_path, old, new, prefix, out.token_ids)
    assert not _close(fresh, stale, 1e-2)  # the two choices really differ here
    assert _close(out.logprobs, stale if choice == "keep" else fresh)


@pytest.mark.parametrize("choice", ["keep", "recompute"])
def test_logprobs_after_an_update_mid_decode_are_the_sampling_distribution(
    tiny_model_path, choice, monkeypatch
):
    engine = _engine(tiny_model_path, kv_cache_on_update=choice)
    prompts = _prompts(engine, 2)
    old = {n: t.detach().cpu().clone() for n, t in engine.model.state_dict().items()}
    new = _perturbed(engine, 4)
    import rollout.hf_engine as hf

    sample, calls = hf.sample, []

    def sample_then_update(*args):  # one call per decode step: the update lands after the 3rd token
        calls.append(1)
        if len(calls) == 3:
            engine._pending = (new, 1)
        return sample(*args)

    monkeypatch.setattr(hf, "sample", sample_then_update)
    params = GREEDY.model_copy(update={"max_tokens": 7})
    outs = engine.generate([GenRequest(prompt_ids=p, params=params) for p in prompts])
    for p, o in zip(prompts, outs):
        assert o.versions == [0, 0, 0, 1, 1, 1, 1]
        tokens = o.token_ids
        before = _forward_logprobs(_reference(tiny_model_path, old), p, tokens[:3])
        assert _close(o.logprobs[:3], before)
        fresh = _forward_logprobs(engine.model, p, tokens)[3:]
        stale = _stale_kv_logprobs(tiny_model_path, old, new, p + tokens[:3], tokens[3:])
        assert not _close(fresh, stale, 1e-2)
        assert _close(o.logprobs[3:], stale if choice == "keep" else fresh)


def test_store_is_bounded_by_count_and_bytes_and_released_on_finish(tiny_model_path):
    engine = _engine(tiny_model_path, kv_cache_entries=3)
    prompts = _prompts(engine, 5)
    engine.generate(
        [GenRequest(prompt_ids=p, params=GREEDY, cache_key=f"c{i}") for i, p in enumerate(prompts)]
    )
    stats = engine.kv_stats()
    assert stats["entries"] == 3 and stats["evicted"] == 2 and set(engine._kv._entries) == {"c2", "c3", "c4"}
    one = engine._kv._entries["c4"].nbytes
    assert stats["bytes"] == sum(e.nbytes for e in engine._kv._entries.values())
    engine.release(["c3", "c4", "never-seen"])
    assert engine.kv_stats()["entries"] == 1
    engine.release(["c2"])
    assert engine.kv_stats()["bytes"] == 0

    small = _engine(tiny_model_path, kv_cache_bytes=int(one * 1.5))
    small.generate([GenRequest(prompt_ids=prompts[4], params=GREEDY, cache_key=k) for k in ("a", "b")])
    assert len(small._kv) == 1 and small._kv.nbytes <= int(one * 1.5)
    tiny = _engine(tiny_model_path, kv_cache_bytes=one // 2)
    tiny.generate([GenRequest(prompt_ids=prompts[4], params=GREEDY, cache_key="x")])
    assert len(tiny._kv) == 0  # an entry larger than the whole budget is not kept


def test_the_jobspec_choice_reaches_the_engine_options():
    from rollout.serve import RolloutConfig
    from services.jobspec import JobSpec

    assert JobSpec.from_text("{}").asynchrony.kv_cache_on_update == "recompute"
    spec = JobSpec.from_text("asynchrony: {kv_cache_on_update: keep}")
    cfg = RolloutConfig.from_job("j", spec, None)
    assert cfg.engine_options["kv_cache_on_update"] == "keep"
    with pytest.raises(ValueError, match="kv_cache_on_update"):
        JobSpec.from_text("asynchrony: {kv_cache_on_update: sometimes}")
