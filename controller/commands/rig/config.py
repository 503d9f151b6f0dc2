"""The feederd config for a rig's devices: one base, overridden by a partial config.

``rig_config(rig, overrides=...)`` is what ``feederd demo``, ``feederd sim`` (a scenario's
``[controller]`` table), the benchmarks and the tests use: the base a commissioning engineer
would write for the rig (its devices, its case, the voltage band of the 33-bus feeder at peak,
metrics off) with ``overrides`` merged in, then validated like any ``feederd.toml``.
``devices`` adds settings to the rig's device entries, by kind (``"load"``) or by name
(``"load12"``; a name wins over its kind): ``{"load": {"min_kw": 20.0}}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controller.config import LoadedConfig, parse_config
from hil import HilRig

__all__ = ["OWNED_BY_THE_RIG", "merge", "revert_s_for", "rig_config"]

OWNED_BY_THE_RIG = ("site", "devices")
"""Keys of a feederd config that the rig decides (an override may not set them)."""


def revert_s_for(interval_s: float) -> int:
    """The revert timeout the rig's devices are configured with: ten intervals, at least 30 s
    (the config wants at least two)."""
    return max(30, math.ceil(10 * interval_s))


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``: tables merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def rig_config(
    rig: HilRig,
    *,
    overrides: Mapping[str, Any] | None = None,
    site: str = "hil",
    case: Path | None = None,
    source: str = "<rig>",
    devices: Mapping[str, Mapping[str, Any]] | None = None,
) -> LoadedConfig:
    """The rig's config with ``overrides`` (a partial ``feederd.toml``) merged in; every problem
    is a ``ConfigError`` naming the key."""
    overrides = dict(overrides or {})
    interval_s = overrides.get("interval_s", 5.0)
    base: dict[str, Any] = {
        "site": site,
        "interval_s": interval_s,
        "feeder": {
            "case": "builtin:case33bw" if case is None else str(case),
            "v_min_pu": 0.92,
            "v_max_pu": 1.05,
        },
        "metrics": {"enabled": False},
        "devices": rig.config_devices(
            revert_s=revert_s_for(interval_s if isinstance(interval_s, int | float) else 5.0)
        ),
    }
    settings = devices or {}
    base["devices"] = [
        merge(merge(entry, settings.get(entry["kind"], {})), settings.get(entry["name"], {}))
        for entry in base["devices"]
    ]
    data = merge(base, overrides)
    return parse_config(data, source=source, base_dir=Path.cwd() if case is None else case.parent)
