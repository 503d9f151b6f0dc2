"""The config's ``[flex]`` table: the flexibility each interval publishes on ``<root>/flex``
(``controller.flex_outlet``; the contract is ``controller.flex``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from controller.config.fields import Strict

__all__ = ["FlexConfig"]


class FlexConfig(Strict):
    """``enabled``: compute and publish the flexibility every interval (published only with
    ``[mqtt]``; the metrics are set without it). ``window_min``: how far ahead ``min_kw``,
    ``max_kw`` and the curve look (the plan's span if shorter). ``points``: the curve's points
    (2 to 16, the contract's bound). ``budget_fraction``: of the interval, how long the flex
    solves may take after the writes before what they found is published."""

    enabled: bool = True
    window_min: Annotated[int, Field(ge=1, le=1440)] = 60
    points: Annotated[int, Field(ge=2, le=16)] = 4
    budget_fraction: Annotated[float, Field(gt=0, le=0.5)] = 0.2
