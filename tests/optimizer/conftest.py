"""Fixtures for the optimizer tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
for entry in (ROOT, HERE):  # the project may not be installed; helpers live next to the tests
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from optimizer import Network, load_matpower  # noqa: E402

CASE33 = ROOT / "hil" / "data" / "case33bw.m"


@pytest.fixture(scope="session")
def case33() -> Network:
    """The IEEE 33-bus feeder (Baran & Wu)."""
    return load_matpower(CASE33)
