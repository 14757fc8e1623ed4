"""Fixtures for the games/ tests: the data sets (vendored in data/, or $PAYOFF_DATASETS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from games.data import shared_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = shared_data_dir()
    assert (root / "gtalign").is_dir() and (root / "grl").is_dir(), f"data sets not found at {root}"
    return root
