"""The fitting half of bench/simulate.py: rates from a `make bench` result (`calibrate`), the benchmark's
own shape predicted with them (`check`), and a T-PPO-paper-like GPU deployment (`project`).

Calibration (invariant: every rate is either derived from a named measurement or a stated default, and
each default that is used is printed). From P1's `details` (medians over its runs; `n` timed steps =
sync finished / batch_size, the sync job finishes one batch per step):
- learner: busy per step = period − wait (wait from the time account, else learner_idle × period). With
  a time account: push_s = push_rendezvous + push_transfer, learner_s_per_token = forward + backward
  over the encoded tokens per step (a fit through the origin over both modes), learner_step_s = the rest
  of the busy time. Without one: push_s from P3's bytes/s × `model_bytes` when given (else 0), and all
  other busy time per encoded token (through the origin over both modes).
- learner_get_s_per_item = the async learner's wait per step / batch_size (the benchmark's async learner
  is the bottleneck, its rollout gate-limited, so its wait is the queue hop, not starvation).
- queue_s_per_item = 1 / P2's items/s; call_overhead_s and the prefill/decode cost ratio are defaults.
- rollout: a sync call's generation = the sync learner's wait per step − get − poll/2 − call overhead;
  the rollout idle ratios span the job's whole wall (start-up included), so the time outside the steady
  window is solved from the sync run and reused for the async one, giving an async window call's
  generation time. a·S + c·(T + r·P) = generation, with S, T, P the mean decode steps, tokens and
  prefill tokens per call of each mode (`counts`, rate-free), is two equations in (a, c).
The check is therefore a consistency test of the model's structure (which side binds, the gate, the
windows), calibrated on the same runs, not an out-of-sample prediction.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from bench.simulate import BENCH_MODES, MODES, Params, compare, counts, simulate

PREFILL_RATIO = 0.15  # prefilling one token costs this share of one sequence's decode step (default)
CALL_OVERHEAD_S = 0.01  # a call's request round trip, scoring, weight apply, outside the busy time
QUEUE_S = 2e-4  # one item's queue hop when P2 is absent
GOAL = 0.15


@dataclass
class Calibration:
    params: Params
    measured: dict = field(default_factory=dict)  # bench mode -> medians of its P1 runs
    derived: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _median(xs) -> float | None:
    xs = [float(x) for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _shape(p: Params, spec: dict, notes: list[str]) -> Params:
    r, a, ln = spec.get("rollout", {}), spec.get("asynchrony", {}), spec.get("learner", {})
    lengths = r.get("response_lengths") or {}
    got = {
        "batch_size": ln.get("batch_size"),
        "group_size": r.get("group_size"),
        "groups_per_step": r.get("groups_per_step"),
        "replicas": r.get("replicas"),
        "window_tokens": a.get("window_tokens"),
        "max_staleness": a.get("max_staleness"),
        "max_response_tokens": r.get("max_response_tokens"),
        "median_tokens": lengths.get("median_tokens"),
        "sigma": lengths.get("sigma"),
    }
    missing = {k: getattr(p, k) for k, v in got.items() if v is None}
    if missing:
        notes.append(f"default: the P1 spec lacks {sorted(missing)}; kept {missing}")
    notes.append(f"default: prompt_tokens = {p.prompt_tokens} (GTAlign strategy prompts; not in the result)")
    return replace(p, **{k: v for k, v in got.items() if v is not None})


def _measured(p1: dict) -> dict[str, dict]:
    det = p1.get("details") or {}
    runs, accounts, out = det.get("runs") or [], det.get("time_account_s_per_step") or {}, {}
    for mode in BENCH_MODES:
        rs = [r[mode] for r in runs if isinstance(r, dict) and mode in r]
        m = {k: _median(r.get(k) for r in rs) for k in ("wall_s", "finished", "traj_per_s")}
        for part in ("learner", "rollout"):
            m[f"{part}_idle"] = _median(r.get(f"{part}_idle") for r in rs)
            if m[f"{part}_idle"] is None:
                m[f"{part}_idle"] = _median(((det.get("idle") or {}).get(mode) or {}).get(part) or [])
        if m["traj_per_s"] is None:
            m["traj_per_s"] = _median((det.get("traj_per_s") or {}).get(mode) or [])
        accs = [r["time_account"] for r in rs if r.get("time_account")]
        accs = accs or [a for a in accounts.get(mode) or [] if a]
        keys = sorted({k for a in accs for k in a})
        m["account"] = {k: statistics.median(a.get(k, 0.0) for a in accs) for k in keys} if accs else None
        if m["traj_per_s"] is not None:
            out[mode] = m
    return out


def _fit_learner(cal: Calibration, e: dict, model_bytes: float | None, p3: dict | None) -> None:
    m, d, p = cal.measured, cal.derived, cal.params
    accs = {k: m[k]["account"] for k in m if m[k]["account"]}
    if len(accs) == len(m):
        push = statistics.fmean(
            a.get("push_rendezvous", 0) + a.get("push_transfer", 0) for a in accs.values()
        )
        fb = {k: a.get("forward", 0.0) + a.get("backward", 0.0) for k, a in accs.items()}
        per_token = sum(fb[k] * e[k] for k in fb) / sum(e[k] ** 2 for k in fb)
        fixed = statistics.fmean(max(0.0, d["busy"][k] - push - per_token * e[k]) for k in m)
        cal.notes.append("learner: push, forward+backward and the rest from the P1 time account")
    else:
        push = 0.0
        if model_bytes and p3 and (p3.get("details") or {}).get("bytes"):
            push = p3["details"]["ours_s"] * model_bytes / p3["details"]["bytes"]
            cal.notes.append(f"learner: push_s = P3's push time scaled to {model_bytes:.3g} bytes")
        else:
            cal.notes.append("default: push_s = 0 (no time account; pass --model-bytes to use P3's rate)")
        per_token = sum((d["busy"][k] - push) * e[k] for k in m) / sum(e[k] ** 2 for k in m)
        fixed = 0.0
        cal.notes.append("default: learner_step_s = 0 (no time account): all busy time per encoded token")
    cal.params = replace(p, learner_s_per_token=max(per_token, 0.0), learner_step_s=fixed, push_s=push)


def _fit_rollout(cal: Calibration, c: dict[str, dict], n: int) -> None:
    """Decode and prefill rates from the sync learner's wait and both modes' rollout idle ratios."""
    p, m, d = cal.params, cal.measured, cal.derived
    groups = max(1, -(-p.batch_size // p.group_size))
    per_rep = math.ceil(groups / (p.groups_per_call * p.replicas))  # sync calls per replica per step
    over = p.call_overhead_s + p.queue_s_per_item * p.groups_per_call * p.group_size
    get = p.learner_get_s_per_item * p.batch_size
    gen = {"sync": (d["wait"]["sync"] - get - p.poll_s / 2 - per_rep * over) / per_rep}
    idle_s, idle_a = m["sync"]["rollout_idle"], m["async"]["rollout_idle"]
    if idle_s is None or idle_a is None or gen["sync"] <= 0:
        cal.notes.append("default: decode/prefill rates kept (no usable rollout measurement in P1)")
        return
    busy_s = gen["sync"] * (n + 1) * math.ceil(groups / p.groups_per_call)
    outside = max(0.0, busy_s / ((1 - idle_s) * p.replicas) - m["sync"]["wall_s"])
    busy_a = (1 - idle_a) * p.replicas * (m["async"]["wall_s"] + outside)
    calls_a = (n + 1 + max(1, p.max_staleness)) * p.batch_size / c["async"]["items"]
    gen["async"] = busy_a / calls_a
    d.update(generation_s_per_call=gen, outside_steady_window_s=outside)
    cal.notes.append(
        f"rollout: {outside:.1f} s of each job's rollout wall lies outside the steady window (start-up, "
        f"from the sync run); async calls ≈ (steps + max_staleness) batches"
    )
    r = PREFILL_RATIO
    a_mat = np.array([[c[k]["S"], c[k]["T"] + r * c[k]["P"]] for k in ("sync", "async")])
    y = np.array([gen["sync"], gen["async"]])
    a, cc = np.linalg.lstsq(a_mat, y, rcond=None)[0]
    if a < 0 or cc < 0:  # the two calls do not separate the per-step and per-sequence costs
        a, cc = 0.0, float(a_mat[:, 1] @ y / (a_mat[:, 1] @ a_mat[:, 1]))
        cal.notes.append("rollout: the 2x2 fit was not positive; decode_a_s = 0, c fitted alone")
    cal.notes.append(f"default: prefill per token = {r} x decode_c_s (not separable from P1)")
    cal.params = replace(p, decode_a_s=float(a), decode_c_s=float(cc), prefill_s_per_token=float(r * cc))


def calibrate(
    result: str | Path | dict, model_bytes: float | None = None, verbose: bool = True
) -> Calibration:
    """Component rates from a `make bench` result (path or parsed dict); see the module docstring."""
    data = result if isinstance(result, dict) else json.loads(Path(result).read_text())
    entries = {e.get("id"): e for e in data.get("results", []) if not e.get("error")}
    cal = Calibration(Params(payoff_lengths=True))
    p2, p3, p5 = entries.get("P2"), entries.get("P3"), entries.get("P5")
    per_s = ((p2 or {}).get("details") or {}).get("ours_per_s")
    q = 1.0 / per_s if per_s else QUEUE_S
    cal.notes.append(f"queue_s_per_item = {q:.3g} s " + ("(1 / P2's items/s)" if per_s else "(default)"))
    cal.notes.append(f"default: call_overhead_s = {CALL_OVERHEAD_S} (not separable from P1)")
    cal.params = replace(cal.params, queue_s_per_item=q, call_overhead_s=CALL_OVERHEAD_S)
    p1 = entries.get("P1")
    cal.measured = _measured(p1) if p1 else {}
    if set(cal.measured) != set(BENCH_MODES):
        _fallback(cal, p5)
    else:
        _from_p1(cal, p1, model_bytes, p3)
    if verbose:
        print("calibration:")
        for line in cal.notes:
            print("  " + line)
    return cal


def _from_p1(cal: Calibration, p1: dict, model_bytes: float | None, p3: dict | None) -> None:
    m = cal.measured
    cal.params = _shape(cal.params, (p1.get("details") or {}).get("spec") or {}, cal.notes)
    p = cal.params
    n = max(1, round((m["sync"]["finished"] or 0) / p.batch_size)) if m["sync"]["finished"] else p.steps - 1
    cal.params = p = replace(p, steps=n + 1)
    period = {k: m[k]["wall_s"] / n for k in m}
    wait = {k: (m[k]["account"] or {}).get("wait", m[k]["learner_idle"] * period[k]) for k in m}
    cal.derived = {"timed_steps": n, "period_s": period, "wait": wait}
    cal.derived["busy"] = {k: period[k] - wait[k] for k in m}
    cal.params = replace(p, learner_get_s_per_item=wait["async"] / p.batch_size)
    cal.notes.append("learner_get_s_per_item = the async learner's wait per step / batch_size")
    c = {k: counts(replace(cal.params, mode=BENCH_MODES[k]), seeds=1) for k in m}  # its own lengths
    _fit_learner(cal, {k: c[k]["E"] for k in m}, model_bytes, p3)
    _fit_rollout(cal, c, n)


def _fallback(cal: Calibration, p5: dict | None) -> None:
    cal.notes.append("default: no P1 with both modes in the result: the job shape and rates kept")
    tok_s = ((p5 or {}).get("details") or {}).get("ours_tok_per_s")
    if tok_s:  # P5: bench.rollout's default batch of 16 (its own model): scales the decode rates
        p, b = cal.params, 16
        k = (b / tok_s) / (p.decode_a_s + p.decode_c_s * b)
        cal.params = replace(p, decode_a_s=p.decode_a_s * k, decode_c_s=p.decode_c_s * k)
        cal.notes.append(f"rollout: decode step at batch 16 = 16 / P5's {tok_s:.1f} tok/s (P5's model)")


def check(result, model_bytes: float | None = None, seeds: int = 1, verbose: bool = True) -> dict:
    """Predicted vs measured P1 per mode with the rates calibrated from `result`."""
    cal = calibrate(result, model_bytes, verbose)
    rows = {}
    for bench_mode, mode in BENCH_MODES.items():
        if bench_mode in cal.measured:
            pred = simulate(replace(cal.params, mode=mode), seeds)
            meas = cal.measured[bench_mode]
            rows[bench_mode] = {
                "predicted": pred,
                "measured": meas,
                "error": pred["traj_per_s"] / meas["traj_per_s"] - 1,
            }
    out = {"rows": rows, "params": asdict(cal.params), "notes": cal.notes}
    out["within_goal"] = bool(rows) and all(abs(r["error"]) <= GOAL for r in rows.values())
    if len(rows) == 2:
        ratio = {
            k: rows["async"][k]["traj_per_s"] / rows["sync"][k]["traj_per_s"]
            for k in ("predicted", "measured")
        }
        out["ratio"] = ratio
    if verbose:
        print(
            f"{'mode':<6} {'predicted':>10} {'measured':>9} {'error':>7}  learner idle p/m   rollout idle p/m*"
        )
        for k, r in rows.items():
            pr, me = r["predicted"], r["measured"]
            print(
                f"{k:<6} {pr['traj_per_s']:>10.2f} {me['traj_per_s']:>9.2f} {r['error']:>+7.1%}  "
                f"{pr['learner_idle']:>6.1%} / {me['learner_idle']:<8.1%} {pr['rollout_idle']:>6.1%} / "
                f"{me['rollout_idle'] if me['rollout_idle'] is None else format(me['rollout_idle'], '.1%')}"
            )
        if "ratio" in out:
            print(
                f"P1 async/sync: predicted {out['ratio']['predicted']:.2f}x, measured {out['ratio']['measured']:.2f}x"
            )
        print(
            "* measured rollout idle spans the job's whole wall (start-up included); predicted: steady window"
        )
        print(f"goal: every mode within {GOAL:.0%}: {'met' if out['within_goal'] else 'NOT met'}")
    return out


# ---------------------------------------------------------------------- projection
PROJECT = Params(
    mode="async-windows",
    steps=10,
    batch_size=8192,
    group_size=16,
    groups_per_step=64,
    groups_per_call=64,
    replicas=8,
    window_tokens=8192,
    max_staleness=1,
    prompt_tokens=512,
    median_tokens=3000.0,
    sigma=1.0,
    max_response_tokens=24576,
    decode_a_s=0.010,
    decode_c_s=2.5e-4,
    prefill_s_per_token=4e-5,
    max_batch=128,
    prefix_cache=False,
    call_overhead_s=2.0,
    queue_s_per_item=5e-4,
    learner_s_per_token=1 / 48000,
    learner_step_s=8.0,
    learner_get_s_per_item=5e-4,
    push_s=5.0,
)
ASSUMPTIONS = {
    "model": "dense 7B-class policy + a 7B critic (T-PPO: no reference model), bf16; the paper's run is "
    "Qwen2.5-32B on H800, so these are per-GPU rates of a smaller model on the same class of GPU",
    "hardware": "8 rollout GPUs (one TP=1 replica each, 80 GB) + 8 learner GPUs (FSDP), disjoint",
    "decode": "t(b) = 10 ms + 0.25 ms x b per step: the 10 ms reads 15 GB of weights (+ scheduling), the "
    "0.25 ms one sequence's KV at a ~8k-token mean context (57 KB/token)",
    "kv capacity": "at most 128 sequences decode at once per replica (~55 GB of KV); the rest queue",
    "prefill": "25k tok/s per replica; a continuing sequence re-prefills prompt + prefix at each window "
    "(kv_cache_on_update=recompute drops its KV at every weight update)",
    "learner": "48k encoded tok/s over 8 GPUs for policy + critic forward + backward (6k tok/s/GPU, ~50 % "
    "MFU); 8 s per step for the two optimizer steps, collate and report; segments re-encode their whole "
    "prefix; packed batches (no padding)",
    "push": "5 s per step (15 GB bf16 to 8 replicas over NCCL), blocking the learner",
    "queue and calls": "0.5 ms per item on each side; 2 s per call (request, judge scoring, weight apply)",
    "job": "512 prompts x 16 = 8192 items per step, window 8192, L_max 24576, lengths log-normal (median "
    "3000, sigma 1: mean ~4.7k, ~2 % reach L_max), prompt 512 tokens, max_staleness 1; sync and "
    "full-episode calls carry 64 groups per replica (payoff's episode calls carry one group today)",
}
VARIANTS = {
    "as assumed": {},
    "prefix KV kept across windows": {"prefix_cache": True},
    "learner trains windows without re-encoding prefixes": {"reencode_prefix": False},
    "12 rollout + 4 learner GPUs": {
        "replicas": 12,
        "groups_per_step": 43,  # 43 x 16 x 12 ≈ 8192 sequences, as 64 x 16 x 8
        "groups_per_call": 43,
        "learner_s_per_token": 1 / 24000,
    },
    "learner 2x faster (96k tok/s)": {"learner_s_per_token": 1 / 96000},
    "no KV limit: a replica decodes all its sequences at once": {"max_batch": 0},
    "sync episode calls of one group (payoff today)": {"groups_per_call": 1},
}
PAPER_RATIO = 2.5


def rates(p: Params) -> dict[str, float]:
    """The assumed rates in the units a reader checks them in."""
    b = p.max_batch or p.groups_per_step * p.group_size
    return {
        "decode_tok_s_per_replica_at_max_batch": b / (p.decode_a_s + p.decode_c_s * b),
        "decode_tok_s_single_sequence": 1 / (p.decode_a_s + p.decode_c_s),
        "prefill_tok_s_per_replica": 1 / p.prefill_s_per_token,
        "learner_encoded_tok_s": 1 / p.learner_s_per_token,
    }


def print_modes(out: dict[str, dict]) -> str:
    lines = [
        f"{'mode':<20} {'traj/s':>8} {'s/step':>9} {'fin/step':>9} {'learner idle':>12} {'rollout idle':>12} {'vs sync':>8}"
    ]
    for m, r in out.items():
        ratio = f"{r['ratio_vs_sync']:.2f}x" if "ratio_vs_sync" in r else ""
        lines.append(
            f"{m:<20} {r['traj_per_s']:>8.3g} {r['s_per_step']:>9.4g} {r['finished_per_step']:>9.1f} "
            f"{r['learner_idle']:>12.1%} {r['rollout_idle']:>12.1%} {ratio:>8}"
        )
    return "\n".join(lines)


def project(p: Params = PROJECT, verbose: bool = True) -> dict:
    """The expected async/sync ratio of a T-PPO-paper-like GPU deployment, with every assumption."""
    modes = compare(p, MODES)
    sens = {}
    for name, upd in VARIANTS.items():
        q = replace(p, **upd)
        two = modes if not upd else compare(q, ("sync", "async-windows"))
        sens[name] = {
            "sync_traj_per_s": two["sync"]["traj_per_s"],
            "async_windows_traj_per_s": two["async-windows"]["traj_per_s"],
            "ratio": two["async-windows"]["ratio_vs_sync"],
        }
    out = {
        "assumptions": ASSUMPTIONS,
        "params": asdict(p),
        "rates": rates(p),
        "modes": modes,
        "ratio_async_windows_vs_sync": modes["async-windows"]["ratio_vs_sync"],
        "ratio_async_full_episodes_vs_sync": modes["async-full-episodes"]["ratio_vs_sync"],
        "paper_ratio": PAPER_RATIO,
        "sensitivity": sens,
    }
    if verbose:
        print("assumptions:")
        for k, v in ASSUMPTIONS.items():
            print(f"  {k}: {v}")
        print("rates: " + ", ".join(f"{k} {v:,.0f}" for k, v in out["rates"].items()))
        print("params: " + ", ".join(f"{k}={v}" for k, v in asdict(p).items() if k != "mode"))
        print(print_modes(modes))
        r = out["ratio_async_windows_vs_sync"]
        print(f"expected async (T-PPO windows) / sync: {r:.2f}x   (T-PPO paper: up to {PAPER_RATIO}x)")
        print("sensitivity (async-windows / sync):")
        for name, s in sens.items():
            print(
                f"  {name:<58} {s['ratio']:.2f}x  ({s['async_windows_traj_per_s']:.3g} vs {s['sync_traj_per_s']:.3g} traj/s)"
            )
    return out
