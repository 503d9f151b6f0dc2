"""Shared fixtures (the helpers live in ``tests/support``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog
from hypothesis import settings

from hil import HilRig

# The property tests draw the same examples on every run (seeded by each test's name): the
# suite's red is reproducible. Wider random exploration is the fuzz benchmarks' job
# (benchmarks/fuzz_config.py, benchmarks/fuzz_dr.py), with a seed on their command line.
settings.register_profile("feederd", derandomize=True)
settings.load_profile("feederd")


@pytest.fixture(autouse=True)
def _plain_logging() -> Iterator[None]:
    """Each test starts from structlog's defaults, whatever an earlier one configured, and
    without the handler ``configure_logging`` puts on the standard library's root logger."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "feederd"]:
        root.removeHandler(handler)


@pytest.fixture
async def rig() -> AsyncIterator[HilRig]:
    """The 33-bus rig in real time on loopback (nominal load, 80% sun), for a daemon that runs
    as a separate process (``feederd run``) on the system clock."""
    async with HilRig(load_scale=lambda _t: 1.0, pv_available_frac=lambda _t: 0.8) as r:
        yield r
