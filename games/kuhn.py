"""Kuhn Poker for self-play, and its normal form for the equilibrium solver.

Three cards J < Q < K; each player antes 1 and gets one card. Player 0 checks or bets 1; after a check
player 1 checks (showdown for 1) or bets; facing a bet a player calls (showdown for 2) or folds. Moves are
written `[check]`, `[bet]`, `[call]`, `[fold]`. The game value for player 0 is −1/18.

`normal_form()` enumerates both players' pure strategies (27 × 64) and averages the payoff over the six
deals using the same rule functions as the game, so the solver checks the rules too.
"""

from __future__ import annotations

import random
from itertools import permutations, product

import numpy as np

from games.base import StepResult, TextGame, make_info
from games.zero_sum import bracketed, forfeit, move_text

CARDS = ("J", "Q", "K")
DEALS = tuple(permutations(range(3), 2))  # (card of player 0, card of player 1)
ROLES = ("player_0", "player_1")


def legal_actions(history: tuple[str, ...]) -> tuple[str, ...]:
    """Legal moves after `history` (the moves so far), empty when the hand is over."""
    if history in ((), ("check",)):
        return ("check", "bet")
    if history in (("bet",), ("check", "bet")):
        return ("call", "fold")
    return ()


def payoff(cards: tuple[int, int], history: tuple[str, ...]) -> float:
    """Player 0's winnings at a terminal history."""
    if history[-1] == "fold":
        folder = (len(history) - 1) % 2  # the player who moved last
        return 1.0 if folder == 1 else -1.0
    stake = 2.0 if "bet" in history else 1.0
    return stake if cards[0] > cards[1] else -stake


def normal_form() -> tuple[np.ndarray, list[tuple[str, ...]], list[tuple[tuple[str, str], ...]]]:
    """Player 0's expected payoff matrix over pure strategies.

    Player 0, per card: "bet", "check-fold" or "check-call". Player 1, per card: (move facing a bet,
    move after a check).
    """
    p0_plans = ("bet", "check-fold", "check-call")
    p1_plans = tuple(product(("call", "fold"), ("check", "bet")))
    rows = list(product(p0_plans, repeat=3))
    cols = list(product(p1_plans, repeat=3))
    A = np.zeros((len(rows), len(cols)))
    for i, s0 in enumerate(rows):
        for j, s1 in enumerate(cols):
            total = 0.0
            for cards in DEALS:
                plan0, (vs_bet, after_check) = s0[cards[0]], s1[cards[1]]
                history: tuple[str, ...] = ()
                while legal_actions(history):
                    player = len(history) % 2
                    if player == 0 and not history:
                        move = "bet" if plan0 == "bet" else "check"
                    elif player == 0:  # checked, now facing a bet
                        move = plan0.split("-")[1]
                    else:
                        move = vs_bet if history[-1] == "bet" else after_check
                    history += (move,)
                total += payoff(cards, history)
            A[i, j] = total / len(DEALS)
    return A, rows, cols


class KuhnPoker(TextGame):
    name = "kuhn"
    roles = ROLES

    def __init__(self) -> None:
        super().__init__()
        self.cards: tuple[int, int] = (0, 1)
        self.history: tuple[str, ...] = ()

    @property
    def current_role(self) -> str:
        return ROLES[len(self.history) % 2]

    def _reset(self, seed: int) -> dict[str, str]:
        self.cards = random.Random(seed).choice(DEALS)
        self.history = ()
        return self._observations()

    def observe(self, role: str) -> str:
        me = ROLES.index(role)
        lines = [
            f"You are {role} in Kuhn Poker (cards J < Q < K, ante 1, bets of 1). Your card: {CARDS[self.cards[me]]}.",
            "Moves so far: "
            + (", ".join(f"{ROLES[k % 2]} {m}" for k, m in enumerate(self.history)) or "none"),
        ]
        legal = legal_actions(self.history)
        if legal and role == self.current_role:
            lines.append("Your move, one of: " + " ".join(f"[{a}]" for a in legal))
        elif legal:
            lines.append("Waiting for the opponent.")
        else:
            lines.append(
                f"Hand over. Cards: player_0 {CARDS[self.cards[0]]}, player_1 {CARDS[self.cards[1]]}."
            )
        return "\n".join(lines)

    def parse(self, text: str) -> str | None:
        legal = legal_actions(self.history)
        public = move_text(text)
        tokens = bracketed(public) or [public.strip().lower()]
        return tokens[-1] if tokens and tokens[-1] in legal else None

    def _step(self, text: str) -> StepResult:
        role = self.current_role
        other = ROLES[1 - ROLES.index(role)]
        move = self.parse(text)
        if move is None:
            return forfeit(
                role, other, f"expected one of {legal_actions(self.history)}", {r: "" for r in ROLES}
            )
        self.history += (move,)
        if legal_actions(self.history):
            return StepResult(self._observations(), 0.0, False, make_info(role, actions=[move]), {role: 0.0})
        p0 = payoff(self.cards, self.history)
        rewards = {"player_0": p0, "player_1": -p0}
        info = make_info(
            role, success=rewards[role] > 0, actions=[move], cards=[CARDS[c] for c in self.cards]
        )
        return StepResult(self._observations(), rewards[role], True, info, rewards)
