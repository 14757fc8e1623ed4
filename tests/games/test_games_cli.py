"""The games CLI: `converge` (JSON output, matrix validation, plots) and `play`."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from games.cli import build_parser, main
from games.dynamics import COMAL_P
from games.sokoban import solve

REPO = Path(__file__).resolve().parents[2]


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_converge_json_default_is_comal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["converge", "--json", "--iters", "5000"]) == 0
    data = last_json(capsys.readouterr().out)
    np.testing.assert_allclose(data["policy"], [4 / 11, 3 / 11, 4 / 11], atol=1e-6)
    assert data["exploitability"] == pytest.approx(5.5e-8, abs=1e-9)  # spec §7.1, COMAL at t = 5000
    assert data["exploitability"] == pytest.approx(float(np.max(COMAL_P @ data["policy"]) - 0.5), abs=1e-12)


def test_converge_json_with_matrix_and_algo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rps = {"P": [[0.5, 0.0, 1.0], [1.0, 0.5, 0.0], [0.0, 1.0, 0.5]]}
    path = tmp_path / "rps.json"
    path.write_text(json.dumps(rps))
    assert (
        main(
            [
                "converge",
                "--matrix",
                str(path),
                "--algo",
                "comal-nash-mp",
                "--iters",
                "400",
                "--json",
                "--pi0",
                "0.6,0.3,0.1",
            ]
        )
        == 0
    )
    data = last_json(capsys.readouterr().out)
    assert data["algo"] == "COMAL(Nash-MP)" and data["iters"] == 400
    np.testing.assert_allclose(data["policy"], [1 / 3] * 3, atol=1e-6)
    P = np.array(rps["P"])
    assert data["exploitability"] == pytest.approx(float(np.max(P @ data["policy"]) - 0.5), abs=1e-12)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"P": [[0.5, 0.3], [0.6, 0.5]]}', "must be 1"),
        ('{"P": [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]}', "square"),
        ('{"P": [[0.5, 2.0], [-1.0, 0.5]]}', "[0, 1]"),
        ('{"Q": []}', '{"P"'),
        ("not json", "not valid JSON"),
    ],
)
def test_converge_rejects_bad_matrices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "m.json"
    path.write_text(content)
    assert main(["converge", "--matrix", str(path), "--json"]) == 2
    assert message in capsys.readouterr().err


def test_converge_other_user_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["converge", "--matrix", "/nonexistent/m.json"]) == 2
    assert main(["converge", "--algo", "sgd", "--json"]) == 2
    assert main(["converge", "--pi0", "1,2", "--json"]) == 2
    assert "unknown --algo" in capsys.readouterr().err


def _png_ok(path: Path) -> None:
    import matplotlib.image as mpimg

    assert path.exists() and path.stat().st_size > 20_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 500
    assert float(np.std(img[..., :3])) > 0.05  # not a blank canvas
    assert len(np.unique(img[..., :3].reshape(-1, 3), axis=0)) > 50  # several line colours


def test_converge_writes_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plots"
    assert main(["converge", "--iters", "3000", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for name in ("MWU", "OMWU", "INPO", "MMD", "Nash-MD", "Nash-MP", "COMAL(INPO)", "COMAL(Nash-MP)"):
        assert name in text
    _png_ok(out / "trajectories.png")
    _png_ok(out / "exploitability.png")


def test_converge_plots_for_larger_games(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(
        json.dumps(
            {"P": [[0.5, 0.2, 0.7, 0.4], [0.8, 0.5, 0.3, 0.6], [0.3, 0.7, 0.5, 0.2], [0.6, 0.4, 0.8, 0.5]]}
        )
    )
    assert main(["converge", "--matrix", str(path), "--iters", "500", "--out", str(tmp_path)]) == 0
    _png_ok(tmp_path / "trajectories.png")


def _play(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], stdin: str
) -> str:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(argv) == 0
    return capsys.readouterr().out


def test_play_sokoban_to_the_end(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from games.sokoban import generate_room

    path = solve(generate_room(3))
    assert path is not None and len(path) <= 5
    out = _play(monkeypatch, capsys, ["play", "sokoban", "--seed", "3"], "\n" + " || ".join(path) + "\n")
    expected = -0.1 * len(path) + 1 + 10
    assert "State:" in out and "episode over" in out and f"player {expected:+.2f}" in out


def test_play_handles_eof_quit_and_bad_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _play(monkeypatch, capsys, ["play", "sokoban", "--seed", "3"], "fly\n")
    assert "invalid action" in out and "end of input" in out
    out = _play(monkeypatch, capsys, ["play", "tictactoe"], "[4]\nquit\n")
    assert "bye" in out
    out = _play(monkeypatch, capsys, ["play", "kuhn", "--seed", "2"], "[bet]\n[fold]\n")
    assert "episode over" in out and "player_0 +1.00" in out


def test_build_parser_mounts_under_another_cli(capsys: pytest.CaptureFixture[str]) -> None:
    root = argparse.ArgumentParser(prog="payoff")
    build_parser(root.add_subparsers(dest="command"))
    args = root.parse_args(["games", "converge", "--json", "--iters", "50", "--algo", "inpo"])
    assert args.func(args) == 0
    assert last_json(capsys.readouterr().out)["algo"] == "INPO"
    args = root.parse_args(["games", "converge", "--json", "--matrix", "/nope.json"])
    assert args.func(args) == 2  # user errors are handled inside the sub-command


def test_python_dash_m_games() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "games", "converge", "--json", "--iters", "100"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert set(last_json(proc.stdout)) >= {"policy", "exploitability"}
    listing = subprocess.run(
        [sys.executable, "-m", "games", "list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "sokoban" in listing.stdout and "comal" in listing.stdout
