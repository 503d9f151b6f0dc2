"""PV inverters with the 700-series chain (701 measurements, 704 controls) in the rig.

The daemon's own drivers discover model 704, write its limit with the revert time and the
explicit revert value, and the physics behind the registers follows; an unrefreshed limit
returns to its revert value (100 %).
"""

from __future__ import annotations

import asyncio
import time

from controller.clock import SystemClock
from controller.daemon import Controller
from devices import ModbusTcpLink, PvSetpoint, SunSpecInverter
from hil import HilRig
from hil.server import SunSpecServer
from hil.sim_devices import SimInverter
from tests.conftest import rig_config


async def test_a_704_inverter_is_read_and_limited_and_reverts_to_its_revert_value() -> None:
    sim = SimInverter("pv", 2, 100.0, available_kw=80.0, control_model=704)
    async with SunSpecServer(sim) as server:
        link = ModbusTcpLink("127.0.0.1", server.port, timeout_s=1.0)
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
            # not refreshed: back to WMaxLimPctRvrt (100 %) once the revert time lapses
            await asyncio.sleep(1.1)
            sim.update()
            assert sim.limit_pct == 100.0
            assert sim.p_kw == 80.0
        finally:
            await link.close()


async def test_the_daemon_holds_an_export_limit_through_704_controls() -> None:
    async with HilRig(
        monotonic=time.monotonic,
        load_scale=lambda t: 0.3,
        pv_available_frac=lambda t: 1.0,
        pv_control_model=704,
    ) as rig:
        await rig.step()
        assert all(
            rig.sim(d.name).model_ids == (1, 701, 702, 704) for d in rig.devices if d.kind == "pv"
        )
        exporting_kw = -rig.state.head_p_kw
        assert exporting_kw > 500.0, "light load and full sun: the feeder exports"
        loaded = rig_config(rig, interval_s=0.5)
        export_limit_kw = exporting_kw - 400.0
        ctl = Controller(loaded, clock=SystemClock())
        ctl.set_limits(import_kw=None, export_kw=export_limit_kw)
        try:
            for _ in range(6):
                rec = await ctl.cycle()
                await asyncio.sleep(0.05)
                await rig.step()
        finally:
            await ctl.close()
        assert rec.status == "optimal"
        # the physics, not the optimizer: export is at or under the limit plus 2 %
        assert -rig.state.head_p_kw <= export_limit_kw * 1.02, (
            rig.state.head_p_kw,
            export_limit_kw,
        )
        curtailed = [
            d.name for d in rig.devices if d.kind == "pv" and rig.sim(d.name).limit_enabled
        ]
        assert curtailed, "some 704 limits are enabled"
