"""`payoff games …` / `python -m games …`: run preference-game dynamics and play games in the terminal.

    converge [--matrix M.json] [--algo NAME] [--iters N] [--json] [--out DIR] [--pi0 0.2,0.5,0.3]
    play GAME [--seed N] [--data PATH]
    list

Mount into another argparse CLI with `build_parser(subparsers)`; each sub-command sets `func(args) -> int`
(user errors print one line and return 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import numpy as np

from games.dynamics import COMAL_NASH, COMAL_P, COMAL_PI0, RULES, Trajectory, make_rule, run
from games.equilibrium import kl, symmetric_nash
from games.matrix_game import validate_preference_matrix
from games.registry import ENVS, make_env

DEFAULT_ITERS = 10_000


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


# ---- converge --------------------------------------------------------------------------------------


def load_matrix(path: str) -> np.ndarray:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CLIError(f"matrix file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise CLIError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or "P" not in data:
        raise CLIError(f'{path} must hold a JSON object {{"P": [[...], ...]}}')
    try:
        return validate_preference_matrix(data["P"])
    except ValueError as e:
        raise CLIError(f"{path}: {e}") from None


def _parse_pi0(text: str | None, n: int, default: np.ndarray | None) -> np.ndarray:
    if text is None:
        return default if default is not None else np.full(n, 1.0 / n)
    try:
        pi0 = np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise CLIError(f"--pi0 must be comma-separated numbers, got {text!r}") from None
    if len(pi0) != n or np.any(pi0 <= 0):
        raise CLIError(f"--pi0 needs {n} positive numbers")
    return pi0 / pi0.sum()


class _Progress:
    """One self-overwriting status line on stderr (stdout stays clean for --json). Silent when stderr is
    not a terminal, so logs do not fill up with carriage returns."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self.label, self.stream = label, stream
        self.enabled = stream.isatty()

    def __call__(self, t: int, total: int) -> None:
        if not self.enabled:
            return
        end = "\n" if t == total else ""
        self.stream.write(f"\r  {self.label:<16} {t:>7}/{total} ({100 * t // total:3d}%)" + end)
        self.stream.flush()


def _summary(tr: Trajectory, nash: np.ndarray) -> dict[str, object]:
    return {
        "algo": tr.name,
        "policy": [float(v) for v in tr.final],
        "exploitability": float(tr.exploitability[-1]),
        "kl_to_nash": kl(nash, tr.final),
    }


def cmd_converge(args: argparse.Namespace) -> int:
    if args.matrix:
        P = load_matrix(args.matrix)
        default_pi0 = None
    else:
        P, default_pi0 = COMAL_P, COMAL_PI0
    nash = symmetric_nash(P) if args.matrix else COMAL_NASH
    pi0 = _parse_pi0(args.pi0, P.shape[0], default_pi0)
    if args.iters < 1:
        raise CLIError("--iters must be at least 1")
    names = [args.algo] if args.algo else (["comal"] if args.json else list(RULES))
    for name in names:
        if name.lower() not in RULES:
            raise CLIError(f"unknown --algo {name!r}; choose from {', '.join(RULES)}")

    trajs = []
    for name in names:
        progress = _Progress(name, sys.stderr) if args.iters >= 1000 else None
        trajs.append(run(make_rule(name), P, pi0, args.iters, progress=progress))

    if args.json:
        out = _summary(trajs[0], nash) | {"iters": args.iters, "nash": [float(v) for v in nash]}
        print(json.dumps(out))
        return 0

    print(f"{'algorithm':<16} {'exploitability':>15} {'KL(x*||pi)':>12}  final policy")
    for tr in trajs:
        s = _summary(tr, nash)
        pol = ", ".join(f"{v:.4f}" for v in tr.final)
        print(f"{tr.name:<16} {s['exploitability']:>15.3e} {s['kl_to_nash']:>12.3e}  [{pol}]")
    from games.plots import plot_exploitability, plot_simplex

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    simplex = plot_simplex(trajs, out_dir / "trajectories.png", nash=nash)
    gap = plot_exploitability(trajs, out_dir / "exploitability.png")
    print(f"wrote {simplex} and {gap}")
    return 0


# ---- play ------------------------------------------------------------------------------------------

_QUIT = {"quit", "exit", "q"}


def _as_answer(line: str) -> str:
    """People type bare moves ("Up || Left", "[4]"); wrap them in the answer format the games expect."""
    return line if "<" in line else f"<think></think><answer>{line}</answer>"


def cmd_play(args: argparse.Namespace, stdin: TextIO | None = None) -> int:
    stdin = stdin or sys.stdin
    try:
        env = make_env(args.game, data=args.data)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from None
    obs = env.reset(args.seed)
    print(f"== {env.name} (seed {args.seed}); type 'quit' to stop ==")
    print(obs[env.current_role])
    while not env.done:
        role = env.current_role
        prompt = f"[{role}]> " if len(env.roles) > 1 else "> "
        sys.stdout.write(prompt)
        sys.stdout.flush()
        line = stdin.readline()
        if not line:  # EOF
            print("\n(end of input)")
            return 0
        line = line.strip()
        if line.lower() in _QUIT:
            print("bye")
            return 0
        if not line:
            continue
        result = env.step(_as_answer(line))
        note = " (invalid action)" if result.info.get("invalid_action") else ""
        print(f"reward {result.reward:+.2f}{note}")
        # after the last move, show the final view of whoever moved
        view = result.observation.get(role if result.done else env.current_role, "")
        if view:
            print(view)
    returns = ", ".join(f"{r} {v:+.2f}" for r, v in env.returns.items())
    print(f"episode over; returns: {returns}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    for name, spec in ENVS.items():
        print(f"{name:<16} {spec.description}")
    print("\nalgorithms for converge --algo: " + ", ".join(RULES))
    return 0


# ---- wiring ----------------------------------------------------------------------------------------


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a sub-command so user errors become a one-line message and exit status 2, whichever CLI
    dispatches it."""

    def run_command(args: argparse.Namespace) -> int:
        try:
            return int(command(args))
        except CLIError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130

    return run_command


def build_parser(subparsers: argparse._SubParsersAction | None = None) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """Add `games` to an existing sub-parser set (the platform CLI), or build a stand-alone parser."""
    if subparsers is None:
        parser = argparse.ArgumentParser(prog="python -m games", description=__doc__.splitlines()[0])
    else:
        parser = subparsers.add_parser("games", help="game-theory toolkit: dynamics and playable games")
    sub = parser.add_subparsers(dest="games_command", required=True)

    conv = sub.add_parser("converge", help="run preference-game dynamics (COMAL 3-action game by default)")
    conv.add_argument(
        "--matrix", help='JSON file {"P": [[...]]}, P[i][j] = probability that action i beats j'
    )
    conv.add_argument("--algo", help=f"one of: {', '.join(RULES)} (default: all; with --json: comal)")
    conv.add_argument(
        "--iters", type=int, default=DEFAULT_ITERS, help=f"iterations (default {DEFAULT_ITERS})"
    )
    conv.add_argument(
        "--pi0", help="initial policy, comma-separated (default: spec's [0.2,0.5,0.3] or uniform)"
    )
    conv.add_argument("--json", action="store_true", help="print one JSON line: policy, exploitability, ...")
    conv.add_argument("--out", default="converge-plots", help="directory for the PNG figures")
    conv.set_defaults(func=_guarded(cmd_converge))

    play = sub.add_parser("play", help="play a game in the terminal")
    play.add_argument("game", choices=list(ENVS))
    play.add_argument("--seed", type=int, default=0)
    play.add_argument("--data", help="data file for data-backed games (default: shared data dir)")
    play.set_defaults(func=_guarded(cmd_play))

    lst = sub.add_parser("list", help="list games and algorithms")
    lst.set_defaults(func=_guarded(cmd_list))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
