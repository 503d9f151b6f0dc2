"""Ops fixtures: a real Mosquitto on a free loopback port, a unique site per test."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from ops_helpers import MOSQUITTO, free_port, wait_port


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
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=5)


@pytest.fixture
def site() -> str:
    """A unique site name, so topics never collide between tests."""
    return "t" + uuid.uuid4().hex[:10]
