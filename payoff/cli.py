"""`payoff` — the command-line entry point. Subcommands dispatch lazily so `payoff --help` is instant.

Commands:
  payoff serve         start the local stack: redis-server, Ray, Serve, the gateway (gateway/README.md)
  payoff submit F      submit a job spec (YAML/JSON) to the gateway; --watch follows it
  payoff jobs          list jobs;  payoff status ID;  payoff logs ID --follow;  payoff cancel ID
  payoff keys ...      create / list / revoke API keys (admin key)
  payoff games ...     equilibrium solvers, preference-game dynamics, play a game in the terminal
  payoff judge ...     score model outputs with a judge
  payoff models ...    build / locate the built-in models (tiny-qwen3, smollm2-135m, *-gtalign warm starts)
  payoff redis ...     run the project's redis-server in the foreground
  payoff eval MODEL    evaluate a model on GTAlign's test sets (--compare A B, --remote)
  payoff demo          train a real model end to end through the local stack (make demo)
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "serve": ("payoff.stack", "main", "start the local stack (redis, Ray, Serve, gateway)"),
    "submit": ("gateway.client_cli", "submit_main", "submit a job spec (YAML or JSON); --watch follows it"),
    "jobs": ("gateway.client_cli", "jobs_main", "list jobs"),
    "status": ("gateway.client_cli", "status_main", "show one job (state, timestamps, progress, error)"),
    "logs": ("gateway.client_cli", "logs_main", "print a job's events; --follow streams them (SSE)"),
    "cancel": ("gateway.client_cli", "cancel_main", "cancel a job"),
    "keys": ("gateway.client_cli", "keys_main", "create, list or revoke API keys (admin)"),
    "games": ("games.cli", "main", "equilibrium solvers, preference-game dynamics, play a game"),
    "judge": ("judge.cli", "main", "score model outputs with a judge (GTAlign, preference, safety)"),
    "models": ("services.models", "main", "build or locate the built-in test models"),
    "redis": ("services.redis_server", "main", "run the project's redis-server in the foreground"),
    "eval": ("payoff.eval_cli", "main", "evaluate models on GTAlign's test sets (--compare A B)"),
    "demo": ("payoff.demo", "main", "train a model end to end through the local stack"),
}


def usage() -> str:
    rows = "\n".join(f"  {name:<8} {help_}" for name, (_, _, help_) in COMMANDS.items())
    return f"usage: payoff COMMAND [ARGS]\n\ncommands:\n{rows}\n\n`payoff COMMAND --help` for details."


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"payoff: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[argv[0]]
    try:
        entry = getattr(importlib.import_module(module), func)
    except ImportError as e:
        print(f"payoff {argv[0]}: not available in this install ({e})", file=sys.stderr)
        return 2
    return int(entry(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
