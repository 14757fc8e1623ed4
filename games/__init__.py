"""payoff's domain core: text-game environments, payoff matrices, equilibrium solvers, welfare functions
and preference-game dynamics. Pure Python + numpy + scipy (no Ray, Redis or torch). See games/README.md.
"""

from games.base import StepResult, TextGame
from games.registry import ENVS, make_env

__all__ = ["ENVS", "StepResult", "TextGame", "make_env"]
