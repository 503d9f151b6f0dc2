"""The controller: config, the composition root, the control loop, DR events, the journal,
metrics, logging and the ``feederd`` CLI."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controller.clock import (
        Clock,
        FakeClock,
        SystemClock,
    )
    from controller.config import (
        Config,
        ConfigError,
        LoadedConfig,
        load_config,
        parse_config,
    )
    from controller.daemon import (
        Daemon,
    )
    from controller.loop import (
        Controller,
    )
    from controller.metrics import (
        Metrics,
    )
    from controller.records import (
        ActiveLimits,
        CycleRecord,
        CycleStatus,
    )
    from controller.snapshot import (
        Snapshot,
    )

__all__ = [
    "ActiveLimits",
    "Clock",
    "Config",
    "ConfigError",
    "Controller",
    "CycleRecord",
    "CycleStatus",
    "Daemon",
    "FakeClock",
    "LoadedConfig",
    "Metrics",
    "Snapshot",
    "SystemClock",
    "load_config",
    "parse_config",
]

# Loaded on first use, so that importing one part (say the journal) loads only what it needs.
_EXPORTS = {
    "ActiveLimits": "controller.records",
    "Clock": "controller.clock",
    "Config": "controller.config",
    "ConfigError": "controller.config",
    "Controller": "controller.loop",
    "CycleRecord": "controller.records",
    "CycleStatus": "controller.records",
    "Daemon": "controller.daemon",
    "FakeClock": "controller.clock",
    "LoadedConfig": "controller.config",
    "Metrics": "controller.metrics",
    "Snapshot": "controller.snapshot",
    "SystemClock": "controller.clock",
    "load_config": "controller.config",
    "parse_config": "controller.config",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
