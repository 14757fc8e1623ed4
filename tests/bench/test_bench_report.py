"""bench.report (entry format, markdown, baseline comparison) and bench.run helpers; runs no benchmark."""

import json

import pytest
from pydantic import ValidationError

from bench import run as bench_run
from bench.report import (
    Entry,
    compare,
    compare_table,
    error_entry,
    failed,
    higher_is_better,
    load_results,
    make_entry,
    markdown_table,
    meets,
    parse_goal,
    spread_of,
    write_results,
)


def entry(id="P2", runs=(1.0, 1.1, 0.9), goal=">= 0.5", unit="x"):
    return make_entry(id, f"bench {id}", list(runs), unit=unit, reference="ref", goal=goal)


def test_make_entry_computes_median_spread_and_goal():
    e = entry(runs=[0.6, 0.4, 0.55])
    assert e.ratio == e.median == 0.55 and e.spread == pytest.approx(0.2) and e.spread_kind == "range"
    assert e.goal_met is True and e.runs == [0.6, 0.4, 0.55]
    assert entry(runs=[0.4, 0.45]).goal_met is False  # median 0.425 < 0.5
    assert entry("P6-submit", [40.0, 60.0, 55.0], "< 50", "ms").goal_met is False
    assert entry(runs=[2.0]).spread == 0.0


def test_iqr_spread_and_goal_parsing():
    assert spread_of([1, 2, 3, 4, 5], "iqr") == pytest.approx(2.0)
    assert parse_goal(">= 1.5") == (">=", 1.5) and parse_goal("<50") == ("<", 50.0)
    assert meets(50.0, "<= 50") and not meets(50.0, "< 50") and meets(0.09, "< 0.1")
    with pytest.raises(ValueError):
        parse_goal("about 2x")


def test_entry_validation():
    with pytest.raises(ValueError):
        make_entry("P2", "x", [], reference="r", goal=">= 1")
    with pytest.raises(ValueError):
        make_entry("P2", "x", [float("nan")], reference="r", goal=">= 1")
    with pytest.raises(ValidationError):
        Entry(id="P2", unit="seconds")
    with pytest.raises(ValidationError):
        Entry(id="P2", surprise=1)  # extra fields go in details
    e = error_entry("P4", "learner", "timed out after 1200 s")
    assert e.error and e.ratio is None and e.goal_met is None


def test_direction_from_goal_and_unit():
    assert higher_is_better(entry(goal=">= 0.5"))
    assert not higher_is_better(entry(goal="<= 1.2"))
    assert not higher_is_better(entry("P6-status", [9.0], "< 50", "ms"))
    assert not higher_is_better(Entry(id="P7-learner", unit="fraction", ratio=0.05, median=0.05))
    assert higher_is_better(Entry(id="X", unit="x"))


def test_results_round_trip(tmp_path):
    path = tmp_path / "r.json"
    write_results(path, [entry(), error_entry("P4", "learner", "boom")], {"machine": "cpu2-vm"})
    data = json.loads(path.read_text())
    assert set(data) == {"metadata", "results"} and data["results"][0]["id"] == "P2"
    back = load_results(path)
    assert back.metadata["machine"] == "cpu2-vm" and [e.id for e in back.results] == ["P2", "P4"]
    write_results(path, [entry()])  # module files: results only
    assert list(json.loads(path.read_text())) == ["results"]


def test_markdown_table_rows():
    md = markdown_table(
        [
            entry(),
            entry("P6-submit", [12.0, 15.5], "< 50", "ms"),
            error_entry("P4", "learner", "exit code 1: a|b"),
        ]
    )
    lines = md.strip().splitlines()
    assert lines[0].startswith("| id |") and len(lines) == 5
    assert "| P2 |" in lines[2] and "1x" in lines[2] and "| yes |" in lines[2] and "(range)" in lines[2]
    assert "13.8 ms" in lines[3] and "12.0 ms, 15.5 ms" in lines[3]
    assert "**error**" in lines[4] and "a\\|b" in lines[4]  # a pipe in the message must not split the row


def verdict(base, new, **kw):
    (c,) = compare([base], [new], **kw)
    return c


def test_compare_higher_is_better():
    base = entry(runs=[1.0, 1.02, 0.98])  # median 1.0, spread 0.04 -> allowance = 10 % floor = 0.1
    assert verdict(base, entry(runs=[0.95, 0.94, 0.96])).verdict == "ok"
    c = verdict(base, entry(runs=[0.85, 0.86, 0.84]))
    assert c.verdict == "REGRESSION" and c.delta == pytest.approx(-0.15) and c.allowance == pytest.approx(0.1)
    assert verdict(base, entry(runs=[1.2, 1.2, 1.2])).verdict == "improved"


def test_compare_lower_is_better_for_le_goals_and_ms():
    base = entry("P3", [1.0, 1.0], "<= 1.2")
    assert verdict(base, entry("P3", [1.2, 1.2], "<= 1.2")).verdict == "REGRESSION"
    assert verdict(base, entry("P3", [0.8, 0.8], "<= 1.2")).verdict == "improved"
    ms = entry("P6-status", [10.0, 10.0], "< 50", "ms")
    assert verdict(ms, entry("P6-status", [12.0, 12.0], "< 50", "ms")).verdict == "REGRESSION"
    assert verdict(ms, entry("P6-status", [8.0, 8.0], "< 50", "ms")).verdict == "improved"


def test_noise_allowance_is_the_largest_of_spreads_and_floor():
    noisy_base = entry(runs=[0.5, 1.0, 1.5])  # spread 1.0 swallows a 0.4 drop
    assert verdict(noisy_base, entry(runs=[0.6, 0.6, 0.6])).allowance == pytest.approx(1.0)
    assert verdict(noisy_base, entry(runs=[0.6, 0.6, 0.6])).verdict == "ok"
    noisy_new = entry(runs=[0.2, 0.7, 1.0])  # new spread 0.8 also counts
    assert verdict(entry(runs=[1.0, 1.0]), noisy_new).verdict == "ok"
    assert verdict(entry(runs=[1.0, 1.0]), entry(runs=[0.7, 0.7]), floor=0.5).verdict == "ok"
    assert verdict(entry(runs=[1.0, 1.0]), entry(runs=[0.7, 0.7]), floor=0.2).verdict == "REGRESSION"


def test_compare_missing_new_and_error_entries():
    base = [entry("P2"), entry("P5", goal=">= 0.9"), error_entry("P4", "learner", "boom")]
    new = [
        entry("P2"),
        error_entry("P5", "rollout", "timed out"),
        entry("P4", goal=">= 1.5"),
        entry("P6-submit", [9.0], "< 50", "ms"),
    ]
    got = {c.id: c.verdict for c in compare(base, new)}
    assert got == {"P2": "ok", "P5": "error", "P4": "no baseline", "P6-submit": "new"}
    got = {c.id: c.verdict for c in compare(base, [entry("P2")])}
    assert got == {"P2": "ok", "P5": "missing", "P4": "missing"}
    assert [c.id for c in failed(compare(base, new))] == ["P5"]  # --strict fails on errors and regressions


def test_compare_table_shows_delta_and_verdict():
    rows = compare(
        [entry(runs=[1.0]), entry("P6-status", [10.0], "< 50", "ms")],
        [entry(runs=[0.5]), entry("P6-status", [10.5], "< 50", "ms")],
    )
    table = compare_table(rows)
    assert "| P2 | 1x | 0.5x | -0.5x (-50 %) | 0.1x | REGRESSION |" in table
    assert "| P6-status | 10.0 ms | 10.5 ms | +0.5 ms (+5 %) | 1.0 ms | ok |" in table


def test_select_benchmarks():
    keys = lambda only: [(b.key, args) for b, args in bench_run.select(only)]  # noqa: E731
    assert [k for k, _ in keys(None)] == ["P1+P7", "P2", "P3+P5", "P4", "P6"]
    assert keys("P3") == [("P3+P5", ["--only", "P3"])]
    assert keys("P3,P5") == [("P3+P5", [])]
    assert keys("P7,P6") == [("P1+P7", []), ("P6", [])]
    assert keys("P6-status") == [("P6", [])]
    with pytest.raises(SystemExit):
        bench_run.select("P9")


def test_default_baseline_prefers_the_same_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_run, "BASELINES", tmp_path)
    for name, machine in (("2025-01-01-cpu2-a", "cpu2-a"), ("2025-02-01-gpu1-b", "gpu1-b")):
        write_results(tmp_path / f"{name}.json", [entry()], {"machine": machine, "started": name[:10]})
    assert bench_run.default_baseline("cpu2-a").name == "2025-01-01-cpu2-a.json"
    assert bench_run.default_baseline("cpu4-c").name == "2025-02-01-gpu1-b.json"  # else the newest


def test_compare_and_promote_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_run, "BASELINES", tmp_path / "baselines")
    result = tmp_path / "2025-03-01-cpu2-a.json"
    write_results(result, [entry(runs=[1.0, 1.0])], {"machine": "cpu2-a", "git_commit": "abc"})
    assert bench_run.main(["promote", str(result)]) == 0
    assert (tmp_path / "baselines" / result.name).exists()
    with pytest.raises(SystemExit):
        bench_run.main(["promote", str(result)])  # no silent overwrite
    worse = tmp_path / "2025-03-02-cpu2-a.json"
    write_results(worse, [entry(runs=[0.5, 0.5])], {"machine": "cpu2-a"})
    assert bench_run.main(["compare", str(worse)]) == 0
    assert bench_run.main(["compare", str(worse), "--strict"]) == 1
    assert "REGRESSION" in capsys.readouterr().out
    quick = tmp_path / "q.json"
    write_results(quick, [entry()], {"machine": "cpu2-a", "quick": True})
    with pytest.raises(SystemExit):
        bench_run.main(["promote", str(quick)])


FAKES = {
    "fake_ok": "import sys\nfrom bench.report import make_entry, write_results\n"
    "print('measuring')\nwrite_results(sys.argv[-1], [make_entry('F1', 'fake', [1.0, 2.0], "
    "reference='r', goal='>= 1')])\n",
    "fake_crash": "import sys\nprint('boom on stderr', file=sys.stderr)\nsys.exit(3)\n",
    "fake_silent": "pass\n",
    # a grandchild in its own session (like redis-server) must not outlive a timed-out benchmark
    "fake_hang": "import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', 'import time; "
    "time.sleep(60)'], start_new_session=True)\ntime.sleep(60)\n",
}


def test_run_one_records_results_errors_and_timeouts(tmp_path, monkeypatch):
    for name, code in FAKES.items():
        (tmp_path / f"{name}.py").write_text(code)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{bench_run.ROOT}")

    def run(module, timeout=30.0):
        entries, _ = bench_run.run_one(bench_run.Bench("F", module, ("F1", "F2"), "fake", 30), [], timeout)
        return entries

    (ok,) = run("fake_ok")
    assert ok.id == "F1" and ok.median == 1.5 and ok.error is None
    crash = run("fake_crash")
    assert [e.id for e in crash] == ["F1", "F2"] and "exit code 3" in crash[0].error
    assert "boom on stderr" in crash[0].error
    assert "unreadable result" in run("fake_silent")[0].error  # exited 0 without writing --json
    seen_before = {p for p in bench_run._proc_table()}
    hang = run("fake_hang", timeout=3)
    assert "timed out after 3 s" in hang[0].error
    leftovers = [
        p
        for p, (_, _, state) in bench_run._proc_table().items()
        if p not in seen_before and state != "Z" and "time.sleep(60)" in _cmdline(p)
    ]
    assert leftovers == []


def _cmdline(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
    except OSError:
        return ""
