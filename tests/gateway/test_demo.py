"""`make demo` end to end, shortened: the tiny warm-started model, a few T-PPO steps through the gateway,
the PNG reward curve and the JSON summary with held-out numbers. Runs on the session's Ray (the demo's
local stack joins it and leaves it running)."""

from __future__ import annotations

import json

import pytest

from payoff import demo

pytestmark = pytest.mark.slow


def test_demo_trains_through_the_gateway_and_writes_its_report(ray_session, serve_url, tmp_path, capsys):
    assert demo.main(["--tiny", "--steps", "6", "--eval-samples", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "submitted job" in out and "step   6/6" in out and str(tmp_path / "summary.json") in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert isinstance(summary["heldout_before"], float) and isinstance(summary["heldout_after"], float)
    assert summary["margin"] == pytest.approx(summary["heldout_after"] - summary["heldout_before"], abs=1e-3)
    assert summary["eval"]["before"]["questions"] == 60 and summary["split"]["heldout"]["split"] == "heldout"
    assert summary["steps"] == [1, 2, 3, 4, 5, 6] and summary["algorithm"] == "tppo"
    assert summary["queue"]["put"] >= 6 * 16 and summary["rollout"]["finished"] > 0
    png = (tmp_path / "reward_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
