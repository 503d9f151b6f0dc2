"""Shared fixtures: the HIL rig on loopback, and a controller config for it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from controller.config import LoadedConfig, parse_config
from hil import HilRig


def rig_config(
    rig: HilRig, *, interval_s: float, import_limit_kw: float | None = None, **poll: Any
) -> LoadedConfig:
    """The config a commissioning engineer would write for the rig's devices."""
    devices = rig.config_devices(revert_s=30)
    data: dict[str, Any] = {
        "site": "test",
        "interval_s": interval_s,
        "feeder": {"case": "builtin:case33bw", "v_min_pu": 0.92},
        "dr": {} if import_limit_kw is None else {"import_limit_kw": import_limit_kw},
        "poll": {"timeout_s": 0.3, **poll},
        "metrics": {"enabled": False},
        "devices": devices,
    }
    return parse_config(data, source="<test>", base_dir=Path.cwd())


@pytest.fixture
async def rig() -> AsyncIterator[HilRig]:
    async with HilRig(
        time_fn=time.monotonic, load_scale=lambda t: 1.0, pv_available_frac=lambda t: 0.8
    ) as r:
        yield r


@pytest.fixture
def make_config(rig: HilRig) -> Callable[..., LoadedConfig]:
    def make(**kw: Any) -> LoadedConfig:
        return rig_config(rig, **kw)

    return make
