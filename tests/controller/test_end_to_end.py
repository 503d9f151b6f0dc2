"""The whole mission once, end to end, on real sockets: HIL feeder + the daemon, one clock.

The measured head import is the HIL's physics (pandapower), never the optimizer's estimate.
The daemon and the rig share a simulated clock (``Simulation``): deadlines are on it, so a
busy machine changes how long a test takes, never what it sees.
"""

from __future__ import annotations

import pytest

from controller.records import CycleStatus
from devices import DeviceState
from tests.support.feeder import feeder


async def test_import_is_held_under_the_limit() -> None:
    async with feeder() as sim:
        uncontrolled_kw = (await sim.physics()).head_p_kw
    limit_kw = uncontrolled_kw - 500.0
    assert limit_kw > 1000.0, "the rig should import well above 1 MW with no control"
    async with feeder(import_limit_kw=limit_kw) as sim:
        records, measured = [], []
        for _ in range(6):
            records.append(await sim.step())
            measured.append((await sim.physics()).head_p_kw)  # what the setpoints did
        ratings = {d.name: d.p_max_kw for d in sim.rig.devices if d.kind != "meter"}
        devices = len(sim.rig.devices)
    assert [r.status for r in records].count(CycleStatus.OPTIMAL) >= 5, records
    # within a few intervals the physics' import is at or below the limit plus 2%
    assert all(m <= limit_kw * 1.02 for m in measured[2:]), (limit_kw, measured)
    # and the controller did not overdo it: it stays within 10% of the limit
    assert measured[-1] >= limit_kw * 0.9, (limit_kw, measured)
    for rec in records:
        for name, kw in rec.setpoints_kw.items():
            assert -ratings[name] - 1e-6 <= kw <= ratings[name] + 1e-6, (name, kw)
    assert records[-1].devices_up == devices


async def test_a_silent_device_is_reported_missing_and_the_interval_goes_on() -> None:
    async with feeder(import_limit_kw=2000.0, poll={"stale_after_intervals": 2}) as sim:
        ctl = sim.daemon.controller
        victim = next(d.name for d in sim.rig.devices if d.kind == "pv")
        await sim.step()
        sim.rig.set_silent(victim, True)
        for _ in range(3):
            rec = await sim.step()
            # the poll gives up on the silent device and the interval dispatches without it
            assert victim in rec.devices_missing
            assert rec.status is CycleStatus.OPTIMAL
            assert victim not in rec.setpoints_kw
        assert ctl.metrics.device_up.labels(victim, "pv")._value.get() == 0
        assert ctl.metrics.device_stale.labels(victim, "pv")._value.get() == 1
        assert ctl.health[victim].state is DeviceState.STALE
        sim.rig.set_silent(victim, False)
        rec = await sim.step()
        assert victim not in rec.devices_missing
        assert ctl.health[victim].state is DeviceState.UP
        assert ctl.metrics.device_stale.labels(victim, "pv")._value.get() == 0


async def test_nothing_is_written_before_a_complete_snapshot() -> None:
    async with feeder(import_limit_kw=2000.0, poll={"stale_after_intervals": 3}) as sim:
        head = next(d.name for d in sim.rig.devices if d.kind == "meter")
        pv = next(d.name for d in sim.rig.devices if d.kind == "pv")
        sim.rig.set_silent(head, True)
        rec = await sim.step()
        assert rec.status is CycleStatus.NO_HEAD_METER
        assert rec.setpoints_kw == {}
        sim.rig.set_silent(head, False)
        sim.rig.set_silent(pv, True)
        statuses = []
        for _ in range(3):
            rec = await sim.step()
            statuses.append(rec.status)
            if rec.status is CycleStatus.WAITING_FIRST_SNAPSHOT:
                assert rec.setpoints_kw == {}
        # the silent PV holds back every write until it is given up as stale
        assert statuses == [
            CycleStatus.WAITING_FIRST_SNAPSHOT,
            CycleStatus.WAITING_FIRST_SNAPSHOT,
            CycleStatus.OPTIMAL,
        ]
        assert rec.setpoints_kw
        assert pv not in rec.setpoints_kw
        # the devices saw no write before then: no PV limit and no battery control enabled
        # until the third interval's writes (this one's)


async def test_a_limit_that_cannot_be_met_reports_its_shortfall() -> None:
    # Far below what the batteries can reach: not an error, the slack says by how much.
    async with feeder() as sim:
        head_kw = (await sim.physics()).head_p_kw
        battery_kw = sum(d.p_max_kw for d in sim.rig.devices if d.kind == "battery")
    limit_kw = head_kw - battery_kw - 800.0
    async with feeder(import_limit_kw=limit_kw) as sim:
        for _ in range(3):
            rec = await sim.step()
        shortfall = (await sim.physics()).head_p_kw - limit_kw
        metrics = sim.daemon.metrics
        batteries = {d.name: d.p_max_kw for d in sim.rig.devices if d.kind == "battery"}
    assert rec.status is CycleStatus.LIMIT_RELAXED
    slack = metrics.limit_slack_kw.labels("import")._value.get()
    # every battery is at full discharge and the slack is the import still over the limit
    assert all(rec.setpoints_kw[name] >= 0.99 * kw for name, kw in batteries.items()), rec
    assert slack == pytest.approx(shortfall, rel=0.05), (slack, shortfall)
    assert metrics.limit_slack_kw.labels("export")._value.get() == 0.0
