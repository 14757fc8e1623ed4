"""Batch normalisation of rewards per data_source (spec §1.4 step 6, GTAlign's `gamellm_normalize`).

The arithmetic lives in `games/normalize.py` (the learner uses it too, and learner/ may not import judge/);
this module keeps the judge's public names. Formulas, invariants and fidelity notes: games/normalize.py and
judge/README.md, "Fidelity to GTAlign's reward code".
"""

from __future__ import annotations

from games.normalize import JAMES_PRIOR, MODES, STD_EPS, Mode, normalize

__all__ = ["JAMES_PRIOR", "MODES", "STD_EPS", "Mode", "normalize"]
