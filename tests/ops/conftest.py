"""Ops fixtures: a real Mosquitto on a free loopback port, a unique site per test, and the HIL
rig in real time (``feederd run`` is a child process on the real clock) on a clock the test
may move forward, to see a revert timer lapse without waiting for it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from ops_helpers import MOSQUITTO, RigClock, wait_port

from hil import HilRig
from tests.support.mosquitto import Mosquitto


@pytest.fixture
def rig_clock() -> RigClock:
    return RigClock()


@pytest.fixture
async def rig(rig_clock: RigClock) -> AsyncIterator[HilRig]:
    """The 33-bus rig on loopback at nominal load and 80% sun, its physics in real time."""
    async with HilRig(
        monotonic=rig_clock, load_scale=lambda _t: 1.0, pv_available_frac=lambda _t: 0.8
    ) as r:
        yield r


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
