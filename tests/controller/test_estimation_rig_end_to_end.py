"""End to end with the HIL rig's own smart meters: a varied feeder (each bus its own load, line
impedances off the case's, meters with an accuracy class), a SunSpec meter at every load bus
behind the rig's gateway, the real daemon. Graded against the rig's pandapower physics."""

from __future__ import annotations

import math
from typing import Any

import pytest

from controller.records import CycleStatus
from hil.variation import RigVariation
from tests.support.feeder import feeder

INTERVALS = 4
RIG: dict[str, Any] = {"variation": RigVariation(seed=3), "meter_buses": "all"}
CLASS = 0.01
"""The config's default accuracy class for the meters (the rig's are better: 0.5%)."""


async def _run(**overrides: Any) -> tuple[list[Any], list[Any], Any]:
    async with feeder(rig=RIG, **overrides) as sim:
        records, states = [], []
        for _ in range(INTERVALS):
            states.append(await sim.rig.step())
            records.append(await sim.daemon.controller.cycle())
            sim.clock.advance(sim.interval_s)
        return records, states, sim.daemon.controller.last_input


def _rms(estimated: dict[int, float], true: dict[int, float]) -> float:
    return math.sqrt(sum((estimated[b] - v) ** 2 for b, v in true.items()) / len(true))


async def test_the_dispatch_runs_on_the_meters_picture_of_a_varied_feeder() -> None:
    records, states, inp = await _run()
    assert all(r.status is CycleStatus.OPTIMAL for r in records), [r.status for r in records]
    assert all(r.estimation_dropped == () for r in records)
    state = states[-1]
    # each bus's load in the dispatch is what its customers draw, within the meters' class
    for bus, true in state.bus_p_kw.items():
        if true > 0:
            assert inp.loads_kw[bus] == pytest.approx(true, abs=3 * CLASS * true + 1.0), bus
    # and the buses no longer move together: not the case's shape times one factor
    case = {b: load / c for b, (load, c) in _with_case(inp.loads_kw, state.bus_p_kw).items()}
    assert max(case.values()) - min(case.values()) > 0.1
    on = [_rms(r.estimated_v_pu, s.v_pu) for r, s in zip(records, states, strict=True)]
    # the estimate's bus voltages are the physics' to within a few thousandths of a p.u.
    # (the rig's impedances are not the case's: the estimate's own sigma does not cover that)
    assert max(on) <= 0.004, on


def _with_case(loads: dict[int, float], true: dict[int, float]) -> dict[int, tuple[float, float]]:
    """Each loaded bus's dispatched load and the case's (its share of the true total)."""
    from optimizer import builtin_case, load_matpower  # noqa: PLC0415

    net = load_matpower(builtin_case("case33bw"))
    return {b.id: (loads[b.id], b.p_load_kw) for b in net.buses if b.p_load_kw and b.id in true}
