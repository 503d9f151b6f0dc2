"""Ops fixtures: a real Mosquitto on a free loopback port, a unique site per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from ops_helpers import MOSQUITTO, wait_port

from tests.support.mosquitto import Mosquitto


@pytest.fixture(autouse=True)
def _plain_structlog() -> Iterator[None]:
    """Library code logs through structlog: start from its defaults, whatever ran before."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    """A Mosquitto broker on 127.0.0.1:<port>, anonymous, stopped after the test."""
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed: run `make apt` (as root)")
    mosquitto = Mosquitto(tmp_path)
    mosquitto.spawn()
    try:
        wait_port(mosquitto.port)
        yield mosquitto.port
    finally:
        mosquitto.stop()


@pytest.fixture
def site() -> str:
    """A unique site name, so topics never collide between tests."""
    return "t" + uuid.uuid4().hex[:10]
