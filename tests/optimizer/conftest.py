"""Fixtures for the optimizer tests."""

from __future__ import annotations

import pytest

from optimizer import Network, builtin_case, load_matpower

CASE33 = builtin_case("case33bw")


@pytest.fixture(scope="session")
def case33() -> Network:
    """The IEEE 33-bus feeder (Baran & Wu)."""
    return load_matpower(CASE33)
