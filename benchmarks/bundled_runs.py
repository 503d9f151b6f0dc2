"""What the side-by-side scenario benchmarks share: one bundled scenario, run through the same
runner as ``feederd sim`` (the real daemon against the HIL rig, simulated time), its KPIs."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from controller.commands.rig.scenario import run_scenario
from hil.scenario import bundled_scenario, load_scenario


def bundled_kpis(
    name: str,
    compress: float,
    keys: Sequence[str],
    *,
    estimation: bool | None = None,
    control: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``keys`` of the KPIs of bundled scenario ``name``, its timeline times ``compress``,
    the controller's estimation and ``[control]`` keys set as given."""
    path = bundled_scenario(name)
    scenario = (
        load_scenario(path).compressed(compress).variant(estimation=estimation, control=control)
    )
    result = asyncio.run(run_scenario(scenario, base_dir=path.parent, source=str(path)))
    return {key: result.kpis.get(key) for key in keys}
