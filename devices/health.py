"""Device health: one tracker per device, pure but for the injected monotonic clock.

States:

``down``
    It has not answered since the daemon started (fewer than ``stale_after`` polls so far).
``up``
    The last poll gave a complete, good reading.
``degraded``
    The last poll gave a reading with values dropped as implausible, or failed fewer than
    ``stale_after`` polls in a row since the last good one.
``stale``
    It failed ``stale_after`` polls in a row: given up, the dispatch treats it as
    uncontrollable until it answers again.

``record_good`` and ``record_failure`` return a ``Transition`` when the state changed (else
``None``), so the caller logs transitions, never repetitions: a device that goes silent and
comes back gives ``up → degraded → stale → up``, three lines however long the outage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["DeviceState", "HealthTracker", "Transition"]


class DeviceState(StrEnum):
    DOWN = "down"
    UP = "up"
    DEGRADED = "degraded"
    STALE = "stale"


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    old: DeviceState
    new: DeviceState
    failures: int
    """Polls failed in a row when it happened (for a recovery: how many there had been)."""
    reason: str | None


@dataclass(slots=True)
class HealthTracker:
    """One device's health; ``stale_after`` consecutive failures make it stale."""

    monotonic: Callable[[], float]
    stale_after: int = 3
    state: DeviceState = DeviceState.DOWN
    failures: int = 0
    """Polls failed in a row."""
    last_good_s: float | None = None
    last_error: str | None = None
    errors: int = 0
    """Polls failed since the start."""
    bad_readings: int = 0
    """Readings (or values of a reading) dropped as unusable since the start."""

    def __post_init__(self) -> None:
        if self.stale_after < 1:
            raise ValueError(f"stale_after must be at least 1, got {self.stale_after}")

    @property
    def stale(self) -> bool:
        return self.state is DeviceState.STALE

    def age_s(self) -> float | None:
        """Seconds since the last good reading (``None`` if there never was one)."""
        return None if self.last_good_s is None else self.monotonic() - self.last_good_s

    def record_good(self, *, dropped: int = 0) -> Transition | None:
        """A usable reading; ``dropped`` values of it were unusable and left out."""
        failures, self.failures = self.failures, 0
        self.last_good_s = self.monotonic()
        self.bad_readings += dropped
        new = DeviceState.DEGRADED if dropped else DeviceState.UP
        reason = f"{dropped} value(s) dropped as unusable" if dropped else None
        return self._set(new, failures=failures, reason=reason)

    def record_failure(self, reason: str, *, bad_reading: bool = False) -> Transition | None:
        """No usable reading this poll; ``bad_reading`` when it answered with unusable values."""
        self.failures += 1
        self.errors += 1
        self.last_error = reason
        if bad_reading:
            self.bad_readings += 1
        if self.failures >= self.stale_after:
            new = DeviceState.STALE
        elif self.state is DeviceState.DOWN:
            new = DeviceState.DOWN
        else:
            new = DeviceState.DEGRADED
        return self._set(new, failures=self.failures, reason=reason)

    def _set(self, state: DeviceState, *, failures: int, reason: str | None) -> Transition | None:
        if state is self.state:
            return None
        old, self.state = self.state, state
        return Transition(old=old, new=state, failures=failures, reason=reason)
