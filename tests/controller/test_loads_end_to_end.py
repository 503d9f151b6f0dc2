"""Controllable loads end to end, on real sockets: the HIL feeder with loads + the daemon.

The loads are register-map devices (``builtin:controllable_load``) served over Modbus TCP; what
they draw is in the rig's pandapower physics, so a shed shows in the measured head import. The
daemon and the rig share a simulated clock (``tests.support.feeder``).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from controller.commands.rig.config import revert_s_for
from controller.commands.rig.simulation import Simulation
from controller.records import CycleRecord, CycleStatus
from tests.support.feeder import INTERVAL_S, feeder

LOAD_KW = 200.0
MIN_KW = 20.0
LOAD_RIG: dict[str, Any] = {
    # the 33-bus feeder with one battery, no PV, and two 200 kW controllable loads
    "pv_available_frac": lambda _t: 0.0,
    "pv_buses": (),
    "battery_buses": (8,),
    "battery_kw": 100.0,
    "load_buses": (12, 28),
    "load_kw": LOAD_KW,
}


def load_feeder(**overrides: Any) -> AbstractAsyncContextManager[Simulation]:
    """The load rig and the config a commissioning engineer would write, loads included."""
    overrides = {
        "feeder": {"v_min_pu": 0.90},  # 4.4 MW: the far buses sag
        # the interval alone: what is shed and by how much, not how the plan spreads a
        # battery's energy over a day with the same limit all along (tests/optimizer has that)
        "control": {"horizon_h": 0},
        **overrides,
    }
    return feeder(rig=LOAD_RIG, devices={"load": {"min_kw": MIN_KW}}, **overrides)


async def _run(sim: Simulation, cycles: int) -> list[tuple[CycleRecord, float]]:
    """Each interval's record, and the head import the physics shows after its writes."""
    out = []
    for _ in range(cycles):
        rec = await sim.step()
        out.append((rec, (await sim.physics()).head_p_kw))
    return out


async def _uncontrolled_kw() -> float:
    async with load_feeder() as sim:
        rig = sim.rig
        assert rig.load_kw == pytest.approx(2 * LOAD_KW)
        return (await sim.physics()).head_p_kw


async def test_an_import_limit_is_met_partly_by_shedding_loads(tmp_path: Path) -> None:
    # more than the battery can give: the rest must come from the loads
    limit_kw = await _uncontrolled_kw() - 250.0
    journal = tmp_path / "journal.sqlite"
    async with load_feeder(import_limit_kw=limit_kw, journal={"path": str(journal)}) as sim:
        rig, ctl = sim.rig, sim.daemon.controller
        runs = await _run(sim, 6)
        journaled = sim.daemon.journal.records()[-1]["setpoints_kw"]
        statuses = [rec.status for rec, _ in runs]
        measured = [m for _, m in runs]
        assert statuses.count(CycleStatus.OPTIMAL) >= 5, statuses
        # the physics shows it: import at or below the limit + 2% within a few intervals ...
        assert all(m <= limit_kw * 1.02 for m in measured[2:]), (limit_kw, measured)
        assert measured[-1] >= limit_kw * 0.9, (limit_kw, measured)
        # ... with the battery at full discharge and the loads drawing less than their demand
        assert rig.batteries["bat08"].p_kw == pytest.approx(100.0, abs=1.0)
        assert rig.shed_kw > 100.0, rig.shed_kw
        for ld in rig.loads.values():
            assert ld.limit_active
            assert MIN_KW - 1e-6 <= ld.p_kw <= LOAD_KW + 1e-6
        last = runs[-1][0]
        loads = {name: kw for name, kw in last.setpoints_kw.items() if name.startswith("load")}
        assert set(loads) == {"load12", "load28"}
        assert all(MIN_KW - 1e-6 <= kw <= LOAD_KW + 1e-6 for kw in loads.values()), loads
        assert sum(LOAD_KW - kw for kw in loads.values()) == pytest.approx(rig.shed_kw, abs=1.0)
        for name, kw in loads.items():
            assert ctl.metrics.setpoint_kw.labels(name, "load")._value.get() == pytest.approx(kw)
            assert journaled[name] == pytest.approx(kw)


async def test_without_a_limit_no_load_is_shed() -> None:
    async with load_feeder() as sim:
        runs = await _run(sim, 3)
        assert [rec.status for rec, _ in runs] == [CycleStatus.OPTIMAL] * 3
        # the ceiling written is the rating: nothing is shed at the default shed cost
        assert all(runs[-1][0].setpoints_kw[n] == pytest.approx(LOAD_KW) for n in sim.rig.loads)
        assert sim.rig.shed_kw == pytest.approx(0.0, abs=1e-6)


async def test_a_load_whose_setpoint_is_not_refreshed_reverts() -> None:
    """The daemon stops: the device's watchdog lifts the ceiling and the import rises."""
    limit_kw = await _uncontrolled_kw() - 250.0
    revert_s = revert_s_for(INTERVAL_S)
    async with load_feeder(import_limit_kw=limit_kw) as sim:
        rig = sim.rig
        runs = await _run(sim, 4)
        shed_while_running = rig.shed_kw
        held_import = runs[-1][1]
        assert shed_while_running > 100.0
        # the watchdog register (address 4) holds the config's revert_s, written with each
        # setpoint
        assert all(ld.registers_at(4, 1) == [revert_s] for ld in rig.loads.values())
        # the daemon writes no more: once revert_s has passed since the last write ...
        sim.clock.advance(revert_s - INTERVAL_S + 0.5)
        state = await sim.physics()
        # ... each load lifts its ceiling on its own
        assert rig.shed_kw == pytest.approx(0.0, abs=1e-6)
        assert not any(ld.limit_active for ld in rig.loads.values())
        assert sum(ld.reverts for ld in rig.loads.values()) == 2
        assert state.head_p_kw > held_import + 0.9 * shed_while_running
