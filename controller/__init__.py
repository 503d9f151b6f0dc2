"""The controller: config, the daemon loop, metrics, logging and the ``feederd`` CLI."""

from controller.clock import Clock, FakeClock, SystemClock
from controller.config import Config, ConfigError, LoadedConfig, load_config, parse_config
from controller.daemon import Controller, CycleRecord
from controller.metrics import Metrics
from controller.snapshot import Snapshot

__all__ = [
    "Clock",
    "Config",
    "ConfigError",
    "Controller",
    "CycleRecord",
    "FakeClock",
    "LoadedConfig",
    "Metrics",
    "Snapshot",
    "SystemClock",
    "load_config",
    "parse_config",
]
