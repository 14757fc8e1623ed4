"""The import layering of DESIGN.md, enforced: gateway → services ← orchestrator/rollout/judge/learner → games.

- `services/` holds the contracts; it imports no service package (only itself and `games`, the pure domain
  core every layer may use).
- `orchestrator/`, `rollout/`, `judge/`, `learner/` import `services/` and `games/` and themselves, never each
  other: they meet through services/ contracts (rollout_api, judge_api, the queue, the weight protocol).
- `gateway/` imports `services/` (and `games`' pure functions for validation and steering), never a service.
- `games/` imports no other payoff package and no Ray, Redis or torch.
- `payoff/` (the CLI, `payoff serve`, the demo) is the composition root and may import everything;
  `bench/`, `deploy/` and `tests/` are not layered.

Every import counts, including the lazy ones inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {
    "services",
    "games",
    "orchestrator",
    "rollout",
    "judge",
    "learner",
    "gateway",
    "payoff",
    "bench",
    "deploy",
    "tests",
}
SERVICES = {"orchestrator", "rollout", "judge", "learner"}
ALLOWED: dict[str, set[str]] = {
    "games": {"games"},
    "services": {"services", "games"},
    "gateway": {"gateway", "services", "games"},
    **{s: {s, "services", "games"} for s in SERVICES},
}
FORBIDDEN_THIRD_PARTY = {"games": {"ray", "redis", "torch"}}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module) of every absolute import in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def violations(root: Path) -> list[str]:
    found = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, top in imports(path):
                where = f"{path.relative_to(root)}:{line}"
                if top in PROJECT and top not in allowed:
                    found.append(f"{where} imports {top} ({package} may import {', '.join(sorted(allowed))})")
                if top in FORBIDDEN_THIRD_PARTY.get(package, set()):
                    found.append(
                        f"{where} imports {top} ({package} must not import "
                        f"{', '.join(sorted(FORBIDDEN_THIRD_PARTY[package]))})"
                    )
    return found


def test_the_code_base_respects_the_layering():
    bad = violations(ROOT)
    assert not bad, "import layering violated:\n" + "\n".join(bad)


def test_the_checker_sees_lazy_imports_and_forbidden_packages(tmp_path):
    (tmp_path / "gateway").mkdir()
    (tmp_path / "games").mkdir()
    (tmp_path / "learner").mkdir()
    (tmp_path / "gateway" / "x.py").write_text("def f():\n    from rollout.serve import RolloutConfig\n")
    (tmp_path / "games" / "y.py").write_text("import torch\nfrom services import keys\n")
    (tmp_path / "learner" / "z.py").write_text("import rollout.engine\nfrom services import queue\n")
    bad = violations(tmp_path)
    assert len(bad) == 4, bad
    assert bad[0].startswith("games/y.py:1 imports torch") and "gateway/x.py:2 imports rollout" in bad[2]
    assert bad[3].startswith("learner/z.py:1 imports rollout")
