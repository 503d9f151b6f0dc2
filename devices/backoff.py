"""Reconnection backoff: exponential, capped, with jitter, never zero (no busy loop).

One rule for every reconnecting part (Modbus links, MQTT devices, the DR intake): after the
``n``-th failure in a row the next attempt waits ``min(max_s, min_s · 2^(n-1))`` times a
random factor in ``[0.5, 1)``; a success starts again from ``min_s``.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]

FLOOR_S = 0.01
"""The least a wait can be, whatever was asked: a zero delay busy-loops."""


class Backoff:
    def __init__(self, min_s: float, max_s: float, *, rng: random.Random | None = None) -> None:
        self.min_s = max(min_s, FLOOR_S)
        self.max_s = max(max_s, self.min_s)
        self.failures = 0
        self._rng = rng or random.Random()

    def failed(self) -> float:
        """Count one more failure; returns the seconds to wait before the next attempt."""
        self.failures += 1
        delay = min(self.max_s, self.min_s * 2.0 ** min(self.failures - 1, 30))
        return max(FLOOR_S, delay * self._rng.uniform(0.5, 1.0))

    def succeeded(self) -> None:
        self.failures = 0
