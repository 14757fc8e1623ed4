"""Fixtures for the games/ tests: the shared data sets (skipped when they are not present)."""

from __future__ import annotations

from pathlib import Path

import pytest

from games.data import shared_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = shared_data_dir()
    if not (root / "gtalign").is_dir() or not (root / "grl").is_dir():
        pytest.skip(f"shared data not found at {root} (set PAYOFF_SHARED_DATA)")
    return root
