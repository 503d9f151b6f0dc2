"""The shape of the receding horizon: how long each step is, and how many see the full network.

Step 0 is the interval being dispatched (its setpoints are applied); the later steps are the
plan. A multi-resolution horizon keeps the first few steps at the control interval and then
covers the rest of the day in coarser blocks, so that an event hours ahead is seen for the
price of a hundred steps rather than a thousand. The shape is fixed for a given configuration
(it does not follow the clock), so the LP the dispatcher keeps has the same structure every
interval and warm-starts from the last basis; only its numbers change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["HorizonSpec"]

_ROUND_S = 1e-6
"""A remainder shorter than this (seconds) is floating-point dust, not a step."""


@dataclass(frozen=True, slots=True)
class HorizonSpec:
    """Each step's duration (`steps_s`, seconds, step 0 first) and `network_steps`, how many of
    the first steps are modelled with the full network (flows, losses and every bus's voltage);
    the later steps use the reduced tail model (see `optimizer.lp`)."""

    steps_s: tuple[float, ...]
    network_steps: int

    def __post_init__(self) -> None:
        if not self.steps_s:
            raise ValueError("horizon: needs at least one step")
        for k, step in enumerate(self.steps_s):
            if not (math.isfinite(step) and step > 0):
                raise ValueError(f"horizon: step {k} lasts {step!r} s, must be finite and > 0")
        if not (isinstance(self.network_steps, int) and 1 <= self.network_steps <= self.horizon):
            raise ValueError(
                f"horizon: network_steps must be a whole number in 1..{self.horizon}, "
                f"got {self.network_steps!r}"
            )

    @classmethod
    def multi_resolution(
        cls,
        interval_s: float,
        *,
        hours: float = 24.0,
        fine_steps: int = 4,
        block_s: float = 900.0,
        network_steps: int = 1,
    ) -> HorizonSpec:
        """`fine_steps` steps of `interval_s`, then blocks of `block_s` until `hours` after now
        (the last block may be shorter); `hours = 0` gives the one step being dispatched.
        `network_steps` is clamped to the number of steps."""
        for name, value in (("interval_s", interval_s), ("block_s", block_s)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"horizon: {name} must be finite and > 0, got {value!r}")
        if not (math.isfinite(hours) and hours >= 0):
            raise ValueError(f"horizon: hours must be finite and >= 0, got {hours!r}")
        if not (isinstance(fine_steps, int) and fine_steps >= 1):
            raise ValueError(f"horizon: fine_steps must be a whole number >= 1, got {fine_steps!r}")
        if not (isinstance(network_steps, int) and network_steps >= 1):
            raise ValueError(
                f"horizon: network_steps must be a whole number >= 1, got {network_steps!r}"
            )
        total = hours * 3600.0
        steps = [float(interval_s)]
        while len(steps) < fine_steps and sum(steps) + interval_s <= total + _ROUND_S:
            steps.append(float(interval_s))
        left = total - sum(steps)
        while left > _ROUND_S:
            step = min(block_s, left)
            steps.append(float(step))
            left -= step
        return cls(tuple(steps), min(network_steps, len(steps)))

    @property
    def horizon(self) -> int:
        """The number of steps."""
        return len(self.steps_s)

    @property
    def starts_s(self) -> tuple[float, ...]:
        """Each step's start, seconds from now (step 0 starts at 0)."""
        out, at = [], 0.0
        for step in self.steps_s:
            out.append(at)
            at += step
        return tuple(out)

    @property
    def span_s(self) -> float:
        """The whole horizon, seconds."""
        return math.fsum(self.steps_s)
