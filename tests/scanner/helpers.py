"""Helpers for the domain tests: the shared real-data folder (skip when absent) and tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scanner.metrics import CATALOGUE

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def data_path(*parts: str) -> Path:
    """A path under ../shared/data; skips the test when it is absent."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real market data {p} is absent (see ../shared/data/README.md)")
    return p


def table_columns(n_rows: int) -> dict[str, np.ndarray]:
    """Every catalogue column as a private array (NaN floats, zero ints)."""
    return {m.name: (np.zeros(n_rows, np.int64) if m.dtype == "i8" else np.full(n_rows, np.nan))
            for m in CATALOGUE.metrics}
