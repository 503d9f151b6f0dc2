"""Shared fixtures (the helpers live in ``tests/support``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _plain_structlog() -> Iterator[None]:
    """Each test starts from structlog's defaults, whatever an earlier one configured."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
