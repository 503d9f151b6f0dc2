"""PV inverters with the 700-series chain (701 measurements, 704 controls) in the rig.

The daemon's own drivers discover model 704, write its limit with the revert time and the
explicit revert value, and the physics behind the registers follows; an unrefreshed limit
returns to its revert value (100 %). Time is simulated: the revert lapses on a ``FakeClock``
and the daemon runs against the rig through ``tests.support.feeder``.
"""

from __future__ import annotations

from typing import Any

from controller.clock import FakeClock
from controller.records import CycleStatus
from devices import ModbusTcpLink, PvSetpoint, SunSpecInverter
from hil.server import SunSpecServer
from hil.sim_devices import SimInverter
from tests.support.feeder import feeder

RIG_704: dict[str, Any] = {
    "load_scale": lambda _t: 0.3,
    "pv_available_frac": lambda _t: 1.0,
    "pv_control_model": 704,
}
"""Light load and full sun, the PV inverters on the 700-series chain."""


async def test_a_704_inverter_is_read_and_limited_and_reverts_to_its_revert_value() -> None:
    clock = FakeClock()
    sim = SimInverter(
        "pv", 2, 100.0, available_kw=80.0, control_model=704, monotonic=clock.monotonic
    )
    async with SunSpecServer(sim) as server:
        link = ModbusTcpLink("127.0.0.1", server.port, timeout_s=1.0, monotonic=clock.monotonic)
        inv = SunSpecInverter("pv", link, 1, rating_kw=100.0, revert_s=1)
        try:
            reading = await inv.read()
            assert reading.p_kw == 80.0
            assert inv.control_model == 704
            result = await inv.write(PvSetpoint(device="pv", p_max_kw=40.0))
            assert result.written == 40.0, result
            assert sim.limit_enabled
            assert sim.limit_pct == 40.0
            assert sim.p_kw == 40.0
            assert (await inv.read()).p_kw == 40.0
            # still inside the revert time: the limit holds
            clock.advance(0.9)
            sim.update()
            assert sim.limit_pct == 40.0
            assert sim.p_kw == 40.0
            # not refreshed: back to WMaxLimPctRvrt (100 %) once the revert time lapses
            clock.advance(0.2)
            sim.update()
            assert sim.limit_pct == 100.0
            assert sim.p_kw == 80.0
            assert (await inv.read()).p_kw == 80.0
        finally:
            await link.close()


async def test_the_daemon_holds_an_export_limit_through_704_controls() -> None:
    async with feeder(rig=RIG_704) as sim:
        state = await sim.physics()
        assert all(
            sim.rig.sim(d.name).model_ids == (1, 701, 702, 704, 705)
            for d in sim.rig.devices
            if d.kind == "pv"
        )
        exporting_kw = -state.head_p_kw
    assert exporting_kw > 500.0, "light load and full sun: the feeder exports"
    export_limit_kw = exporting_kw - 400.0
    async with feeder(rig=RIG_704, dr={"export_limit_kw": export_limit_kw}) as sim:
        for _ in range(6):
            rec = await sim.step()
        assert rec.export_limit_kw == export_limit_kw
        state = await sim.physics()  # what the last interval's setpoints did
        assert rec.status == CycleStatus.OPTIMAL
        # the physics, not the optimizer: export is at or under the limit plus 2 %
        assert -state.head_p_kw <= export_limit_kw * 1.02, (state.head_p_kw, export_limit_kw)
        curtailed = [
            d.name for d in sim.rig.devices if d.kind == "pv" and sim.rig.sim(d.name).limit_enabled
        ]
        assert curtailed, "some 704 limits are enabled"
