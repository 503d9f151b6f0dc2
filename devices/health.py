"""Device health: up, degraded or down, and the age of the last good reading.

Pure but for the injected clock. ``up``: the last poll gave a good reading. ``degraded``: it has
failed fewer than ``down_after`` polls in a row since (or its last reading dropped values as
implausible). ``down``: it has failed ``down_after`` polls in a row, or has never answered.
``record_*`` return the new state when it changed, so the caller logs transitions only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["DeviceState", "HealthTracker"]


class DeviceState(StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


@dataclass(slots=True)
class HealthTracker:
    """One device's health; ``down_after`` consecutive failures make it down."""

    down_after: int = 3
    clock: Callable[[], float] = time.monotonic
    state: DeviceState = DeviceState.DOWN
    failures: int = 0
    last_good_s: float | None = None
    last_error: str | None = None
    errors: int = 0
    dropped: int = 0

    def age_s(self) -> float | None:
        """Seconds since the last good reading (``None`` if there never was one)."""
        return None if self.last_good_s is None else self.clock() - self.last_good_s

    def record_good(self, *, dropped: int = 0) -> DeviceState | None:
        self.failures = 0
        self.last_good_s = self.clock()
        self.dropped += dropped
        return self._set(DeviceState.DEGRADED if dropped else DeviceState.UP)

    def record_failure(self, reason: str, *, implausible: bool = False) -> DeviceState | None:
        self.failures += 1
        self.errors += 1
        self.last_error = reason
        if implausible:
            self.dropped += 1
        if self.last_good_s is None or self.failures >= self.down_after:
            return self._set(DeviceState.DOWN)
        return self._set(DeviceState.DEGRADED)

    def _set(self, state: DeviceState) -> DeviceState | None:
        if state is self.state:
            return None
        self.state = state
        return state
