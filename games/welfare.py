"""Welfare functions that aggregate a user utility U and an LLM utility L into one reward (spec §1.4 step 5).

All take (U, L) as floats or numpy arrays and broadcast.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ArrayLike = float | np.ndarray
Welfare = Callable[[ArrayLike, ArrayLike], ArrayLike]


def cobb_douglas(user: ArrayLike, llm: ArrayLike, alpha: float = 0.5) -> ArrayLike:
    """U^alpha · L^(1-alpha); alpha = 1/2 is GTAlign's main reward sqrt(U·L). Utilities must be ≥ 0."""
    return np.power(user, alpha) * np.power(llm, 1.0 - alpha)


def linear(user: ArrayLike, llm: ArrayLike, weight_user: float = 0.5) -> ArrayLike:
    """Weighted utilitarian sum; weight 1/2 is GTAlign's (U + L)/2 variant."""
    return weight_user * user + (1.0 - weight_user) * llm


def nash_product(user: ArrayLike, llm: ArrayLike, d_user: float = 0.0, d_llm: float = 0.0) -> ArrayLike:
    """(U − d_U)(L − d_L) with disagreement point d; GTAlign's inference steering maximises U·L."""
    return (user - d_user) * (llm - d_llm)


def user_only(user: ArrayLike, llm: ArrayLike) -> ArrayLike:
    return user


def llm_only(user: ArrayLike, llm: ArrayLike) -> ArrayLike:
    return llm


WELFARE: dict[str, Welfare] = {
    "cobb_douglas": cobb_douglas,
    "linear": linear,
    "nash_product": nash_product,
    "user_only": user_only,
    "llm_only": llm_only,
}


def get_welfare(name: str) -> Welfare:
    try:
        return WELFARE[name]
    except KeyError:
        raise ValueError(f"unknown welfare {name!r}; choose from {sorted(WELFARE)}") from None
