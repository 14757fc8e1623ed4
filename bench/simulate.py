"""A discrete-event model of payoff's RL pipeline (rollout replicas → trajectory queue → learner → push),
to project P1 (async/sync finished trajectories per second) and P7 (idle shares) to other machines.

What it models (one event heap, times in seconds, pure Python + numpy):
- A rollout call is a batch of sequences with token budgets, decoded by continuous batching over an active
  set of at most `max_batch` sequences (0: all of them). One decode step of b active sequences takes
  `decode_a_s + decode_c_s * b`; a sequence entering the active set prefills its context first
  (`prefill_s_per_token`: the prompt, plus at every later window the generated prefix, unless
  `prefix_cache` — KV kept between windows and not dropped by a weight update). The engine is busy for
  exactly that time; the call's items then reach the queue after `call_overhead_s + queue_s_per_item`
  per item (not busy: payoff's rollout idle ratio times only the generation).
- Modes (orchestrator/schedule.py). `sync`: ceil(batch_size / group_size) groups of whole episodes, at
  most `groups_per_call` per call and one call per replica in flight, then the rollout polls (every
  `poll_s`) until the learner has trained on them and pushed. `async-windows` (rollout/tppo.py): each
  replica keeps `groups_per_step × group_size` sequences; a call generates ≤ `window_tokens` for each,
  emits one segment per sequence and refills finished slots with whole groups. `async-full-episodes`:
  calls of `groups_per_call` whole-episode groups, continuously. Async calls are issued only while fewer
  than max(1, max_staleness) × batch_size items wait undelivered (orchestrator/staleness.py); a replica
  refused by the gate or the sync barrier is re-dispatched at the next poll or the next call's return.
- The learner takes the oldest `batch_size` items as soon as that many wait; taking them costs
  `learner_get_s_per_item` each, counted as wait (as payoff's wait_s does). A step then costs
  `learner_step_s + learner_s_per_token × encoded tokens + push_s` (the push blocks it, as in
  learner/trainer.py). An item's encoded tokens: prompt + the whole sequence so far (`reencode_prefix`,
  payoff's segments) or prompt + its window; `learner_padded`: batch × the longest item (payoff's collate).
Invariants: episode i of the stream has the same length in every mode (log-normal, median `median_tokens`,
shape `sigma`, rounded and clipped to [1, max_response_tokens], drawn from `seed`); what a call contains
does not depend on timing, only when it runs; no item is dropped (the gate keeps the queue within the
staleness bound); a call's time is linear in the rates: a·(decode steps) + c·(tokens) + p·(prefill tokens).
Measured as bench/async_sync.py does: finished trajectories trained per second from the first learner step
to the last; learner idle = wait / that wall; rollout idle = 1 − engine busy / (replicas × that wall).
Not modelled: decode cost growing with context (fold it into decode_c_s), KV preemption, failures,
multi-turn episodes, head-of-line blocking of the driver's single result queue across replicas.

    python -m bench.simulate check --result bench/baselines/2026-11-23-cpu2-vm.json
    python -m bench.simulate project [--json]
    python -m bench.simulate run [--preset bench|project] [--mode sync] --param decode_c_s=1e-3 ...
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import itertools
import json
import math
import statistics
import sys
from collections import deque
from dataclasses import dataclass, field, fields, replace

import numpy as np

MODES = ("sync", "async-windows", "async-full-episodes")
BENCH_MODES = {"sync": "sync", "async": "async-windows"}  # bench/async_sync.py's modes → ours


@dataclass(frozen=True)
class Params:
    """One pipeline. Defaults: bench/async_sync.py's job shape with rates calibrated from the committed
    2-core baseline (`calibrate` re-derives them from any result file)."""

    mode: str = "async-windows"
    steps: int = 20  # learner steps simulated (throughput is measured from step 1 to the last)
    batch_size: int = 16  # items (segments or episodes) per learner step
    group_size: int = 16
    groups_per_step: int = 1  # windows: each replica's active batch is groups_per_step × group_size
    groups_per_call: int = 1  # whole-episode calls: groups per request (payoff today: 1)
    replicas: int = 1
    window_tokens: int = 32
    max_staleness: int = 2
    prompt_tokens: int = 207  # GTAlign strategy prompts with the tiny model's chat template (mean)
    median_tokens: float = 32.0
    sigma: float = 1.0
    max_response_tokens: int = 256
    decode_a_s: float = 0.0  # per decode step
    decode_c_s: float = 6.2e-4  # per decode step and active sequence
    prefill_s_per_token: float = 9.3e-5
    max_batch: int = 0  # concurrent sequences per replica (0: unlimited)
    prefix_cache: bool = False
    call_overhead_s: float = 0.01
    queue_s_per_item: float = 1.6e-4
    poll_s: float = 0.05
    learner_s_per_token: float = 1.87e-4  # forward + backward, per encoded token
    learner_step_s: float = 0.0  # collate, optimizer, checkpoint, report
    learner_get_s_per_item: float = 4.0e-3
    push_s: float = 0.0
    reencode_prefix: bool = True
    learner_padded: bool = False
    payoff_lengths: bool = False  # draw lengths as services.jobspec.LengthProfile does (episode seed = g)


class _Lengths:
    """The episode stream's lengths, drawn in blocks from one generator: group g is a fixed slice. With
    `payoff_lengths`, group g is the episode seed `seed × 1_000_003 + g` of a job with that seed, drawn
    by LengthProfile itself: a one-replica benchmark job's own lengths."""

    def __init__(self, p: Params, seed: int):
        self.p, self.rng, self.buf = p, np.random.default_rng(seed), np.zeros(0, dtype=np.int64)
        self.seed = seed

    def group(self, g: int) -> np.ndarray:
        n = self.p.group_size
        if self.p.payoff_lengths:
            from services.jobspec import LengthProfile

            prof = LengthProfile(median_tokens=self.p.median_tokens, sigma=self.p.sigma)
            s, cap = self.seed * 1_000_003 + g, self.p.max_response_tokens
            return np.array([prof.draw(s, m, cap) for m in range(n)], dtype=np.int64)
        while len(self.buf) < (g + 1) * n:
            x = self.rng.lognormal(math.log(self.p.median_tokens), self.p.sigma, 4096)
            more = np.clip(np.rint(x), 1, self.p.max_response_tokens).astype(np.int64)
            self.buf = np.concatenate([self.buf, more])
        return self.buf[g * n : (g + 1) * n]


def decode_steps(budgets: np.ndarray, cap: int) -> int:
    """Lock-step decode steps to give every sequence its budget, at most `cap` at a time (FIFO)."""
    if len(budgets) == 0:
        return 0
    if cap <= 0 or cap >= len(budgets):
        return int(budgets.max())
    heap = [int(b) for b in budgets[:cap]]
    heapq.heapify(heap)
    for b in budgets[cap:]:  # a slot frees at the earliest finish; the next sequence starts there
        heapq.heappush(heap, heapq.heappop(heap) + int(b))
    return max(heap)


class _Queue:
    """FIFO of items as chunks of (encoded tokens, finished) arrays."""

    def __init__(self):
        self.chunks: deque = deque()
        self.n = 0

    def put(self, enc: np.ndarray, fin: np.ndarray) -> None:
        self.chunks.append((enc, fin))
        self.n += len(enc)

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        encs, fins = [], []
        while n:
            enc, fin = self.chunks.popleft()
            if len(enc) > n:
                self.chunks.appendleft((enc[n:], fin[n:]))
                enc, fin = enc[:n], fin[:n]
            encs.append(enc)
            fins.append(fin)
            n -= len(enc)
            self.n -= len(enc)
        return np.concatenate(encs), np.concatenate(fins)


@dataclass
class _Replica:
    lim: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # windows: lengths
    gen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # generated so far
    calling: bool = False


class _Sim:
    def __init__(self, p: Params, seed: int):
        if p.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {p.mode!r}")
        self.p, self.lengths, self.next_group = p, _Lengths(p, seed), 0
        self.heap: list = []
        self.tie = itertools.count()
        self.now, self.queue = 0.0, _Queue()
        self.reps = [_Replica() for _ in range(p.replicas)]
        self.ahead = max(1, p.max_staleness) * p.batch_size
        self.groups = max(1, -(-p.batch_size // p.group_size))  # sync: groups per batch
        self.produced = self.base = self.version = 0
        self.poll_pending = self.learning = False
        self.learner_free = 0.0
        self.steps: list[tuple[float, float, float]] = []  # (end time, finished, wait)
        self.busy: list[tuple[float, float]] = []  # engine busy intervals
        self.calls: list[tuple[int, int, int, int]] = []  # (decode steps, tokens, prefill tokens, items)
        self.encoded: list[float] = []  # learner tokens per step

    def _at(self, t: float, kind: str, arg=None) -> None:
        heapq.heappush(self.heap, (t, next(self.tie), kind, arg))

    def run(self) -> dict[str, float]:
        self._dispatch()
        while len(self.steps) < self.p.steps:
            if not self.heap:
                raise RuntimeError("the pipeline stalled (batch_size larger than what the gate admits?)")
            self.now, _, kind, arg = heapq.heappop(self.heap)
            getattr(self, "_on_" + kind)(arg)
        return self._metrics()

    # ------------------------------------------------------------------ rollout
    def _dispatch(self) -> None:
        free = [r for r in self.reps if not r.calling]
        if not free:
            return
        if self.p.mode != "sync":
            if self.queue.n >= self.ahead:
                return self._poll_later()
            for r in free:
                self._issue(r, self.p.groups_per_call)
            return
        if self.produced >= self.groups:
            if any(r.calling for r in self.reps):
                return  # the driver blocks on the results in flight
            if self.version <= self.base:
                return self._poll_later()  # the learner has not trained and pushed yet
            self.produced = 0
        for r in free:
            if self.produced >= self.groups:
                break
            if self.produced == 0:
                self.base = self.version
            k = min(self.p.groups_per_call, self.groups - self.produced)
            self.produced += k
            self._issue(r, k)

    def _poll_later(self) -> None:
        if not self.poll_pending:
            self.poll_pending = True
            self._at(self.now + self.p.poll_s, "poll")

    def _on_poll(self, _) -> None:
        self.poll_pending = False
        self._dispatch()

    def _group(self) -> np.ndarray:
        self.next_group += 1
        return self.lengths.group(self.next_group - 1)

    def _window_call(self, r: _Replica) -> tuple[np.ndarray, ...]:
        p = self.p
        while len(r.lim) < p.groups_per_step * p.group_size:  # refill whole groups (rollout/tppo.py)
            r.lim = np.concatenate([r.lim, self._group()])
            r.gen = np.concatenate([r.gen, np.zeros(p.group_size, dtype=np.int64)])
        budget = np.minimum(p.window_tokens, r.lim - r.gen)
        ctx = np.where(r.gen > 0, 0 if p.prefix_cache else p.prompt_tokens + r.gen, p.prompt_tokens)
        r.gen = r.gen + budget
        fin = r.gen >= r.lim
        enc = p.prompt_tokens + (r.gen if p.reencode_prefix else budget)
        r.lim, r.gen = r.lim[~fin], r.gen[~fin]
        return budget, ctx, enc, fin

    def _issue(self, r: _Replica, k: int) -> None:
        p = self.p
        if p.mode == "async-windows":
            budget, ctx, enc, fin = self._window_call(r)
        else:
            budget = np.concatenate([self._group() for _ in range(k)])
            ctx, enc, fin = np.full(len(budget), p.prompt_tokens), p.prompt_tokens + budget, budget > 0
        steps, tokens, pre = decode_steps(budget, p.max_batch), int(budget.sum()), int(ctx.sum())
        gen_s = p.decode_a_s * steps + p.decode_c_s * tokens + p.prefill_s_per_token * pre
        self.calls.append((steps, tokens, pre, len(enc)))
        self.busy.append((self.now, self.now + gen_s))
        r.calling = True
        end = self.now + gen_s + p.call_overhead_s + p.queue_s_per_item * len(enc)
        self._at(end, "done", (r, enc, fin))

    def _on_done(self, arg) -> None:
        r, enc, fin = arg
        self.queue.put(enc, fin)
        r.calling = False
        self._learn()  # the learner blocks on the stream: it takes before the driver's gate check
        self._dispatch()

    # ------------------------------------------------------------------ learner
    def _learn(self) -> None:
        p = self.p
        if self.learning or self.queue.n < p.batch_size:
            return
        enc, fin = self.queue.take(p.batch_size)
        get = p.learner_get_s_per_item * p.batch_size
        tokens = float(len(enc) * enc.max() if p.learner_padded else enc.sum())
        self.encoded.append(tokens)
        self.learning = True
        wait = self.now - self.learner_free + get
        dur = get + p.learner_step_s + p.learner_s_per_token * tokens + p.push_s
        self._at(self.now + dur, "learned", (float(fin.sum()), wait))

    def _on_learned(self, arg) -> None:
        self.version += 1
        self.steps.append((self.now, *arg))
        self.learning, self.learner_free = False, self.now
        self._learn()

    def _metrics(self) -> dict[str, float]:
        t0, t1 = self.steps[0][0], self.steps[-1][0]
        wall, n = max(t1 - t0, 1e-12), len(self.steps) - 1
        busy = sum(max(0.0, min(e, t1) - max(s, t0)) for s, e in self.busy)
        finished = sum(s[1] for s in self.steps[1:])
        return {
            "traj_per_s": finished / wall,
            "learner_idle": sum(s[2] for s in self.steps[1:]) / wall,
            "rollout_idle": max(0.0, 1.0 - busy / (self.p.replicas * wall)),
            "s_per_step": wall / max(n, 1),
            "finished_per_step": finished / max(n, 1),
            "encoded_tokens_per_step": statistics.fmean(self.encoded),
        }


def simulate(p: Params, seeds: int = 1, seed: int = 0) -> dict[str, float]:
    """The metrics of `p`, averaged over `seeds` length streams (seed, seed + 1, …)."""
    if p.steps < 2:
        raise ValueError("steps must be >= 2 (throughput is measured between the first and last step)")
    runs = [_Sim(p, seed + i).run() for i in range(seeds)]
    return {k: statistics.fmean(r[k] for r in runs) for k in runs[0]}


def compare(p: Params, modes=MODES, seeds: int = 1) -> dict[str, dict[str, float]]:
    """Every mode of `p`, plus each async mode's throughput ratio over sync."""
    out = {m: simulate(replace(p, mode=m), seeds) for m in modes}
    if "sync" in out:
        for m in modes:
            if m != "sync":
                out[m]["ratio_vs_sync"] = out[m]["traj_per_s"] / out["sync"]["traj_per_s"]
    return out


def counts(p: Params, seeds: int = 8) -> dict[str, float]:
    """What p's calls and steps contain, independent of the rates: mean decode steps, tokens, prefill
    tokens and items per call, and encoded tokens per learner step."""
    sims = [_Sim(p, i) for i in range(seeds)]
    for s in sims:
        s.run()
    calls = [c for s in sims for c in s.calls]
    mean = {k: statistics.fmean(c[i] for c in calls) for i, k in enumerate(("S", "T", "P", "items"))}
    return mean | {"E": statistics.fmean(e for s in sims for e in s.encoded)}


def __getattr__(name: str):
    """`calibrate`, `check`, `project` and `PROJECT` live in bench/simulate_fit.py (the fitting half)."""
    if name in ("calibrate", "check", "project", "PROJECT"):
        from bench import simulate_fit

        return getattr(simulate_fit, name)
    raise AttributeError(name)


def _value(f: dataclasses.Field, text: str):
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    if kind == "bool":
        if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"{f.name}: not a boolean: {text!r}")
        return text.lower() in ("1", "true", "yes")
    return {"int": int, "float": float}.get(kind, str)(text)


def with_params(p: Params, pairs: list[str]) -> Params:
    """`p` with `key=value` overrides, typed by the field."""
    by = {f.name: f for f in fields(Params)}
    update = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in by:
            raise SystemExit(f"--param {pair!r}: expected key=value with key one of {sorted(by)}")
        update[key] = _value(by[key], text)
    return replace(p, **update)


def main(argv: list[str] | None = None) -> int:
    from bench.simulate_fit import PROJECT, check, print_modes, project

    ap = argparse.ArgumentParser(prog="bench.simulate", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="calibrate from a result file and predict its P1 per mode")
    c.add_argument("--result", required=True)
    c.add_argument("--model-bytes", type=float, help="the P1 model's pushed bytes (push from P3's rate)")
    pr = sub.add_parser("project", help="the T-PPO-paper-like GPU deployment, assumptions printed")
    pr.add_argument("--json", action="store_true")
    r = sub.add_parser("run", help="simulate any parameters")
    r.add_argument("--preset", choices=["bench", "project"], default="bench")
    r.add_argument("--mode", choices=MODES, action="append")
    r.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "check":
        return 0 if check(args.result, model_bytes=args.model_bytes)["within_goal"] else 1
    if args.cmd == "project":
        out = project(verbose=not args.json)
        if args.json:
            print(json.dumps(out, indent=2))
        return 0
    p = with_params(PROJECT if args.preset == "project" else Params(), args.param)
    out = compare(p, tuple(args.mode or MODES), args.seeds)
    print(json.dumps(out, indent=2) if args.json else print_modes(out))
    return 0


if __name__ == "__main__":  # run the package's copy of this module, the one simulate_fit imports
    from bench.simulate import main as package_main

    sys.exit(package_main())
