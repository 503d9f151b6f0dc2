"""Reactive power reaches the rig's physics: an inverter absorbing vars lowers its bus voltage.

The daemon's own driver writes a reactive setpoint to one of the rig's inverters over Modbus;
the next physics step (pandapower's AC power flow) is compared with the same step (same time,
load and sun) at q = 0. The expected change comes from the feeder's impedances: on a radial
feeder a reactive injection ``ΔQ`` at a bus moves its voltage by ``ΔV ≈ X_path · ΔQ / V``
(linearised DistFlow; ``X_path`` the series reactance from the substation to the bus).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator

import pytest

from controller.clock import FakeClock
from devices import ModbusTcpLink, PvSetpoint, SunSpecInverter
from hil import FeederPhysics, HilRig, PhysicsState

BUS = 18
"""The end of the main trunk: the weakest bus of the 33-bus feeder."""
Q_KVAR = -80.0
SUN = 0.8


@pytest.fixture
async def rig() -> AsyncIterator[HilRig]:
    clock = FakeClock()
    async with HilRig(
        monotonic=clock.monotonic,
        load_scale=lambda _t: 1.0,
        pv_available_frac=lambda _t: SUN,
        physics_period_s=None,
        solve_on_write=False,
    ) as r:
        yield r


def _path_x_ohm(rig: HilRig, bus: int) -> float:
    """Series reactance from the substation to ``bus`` along the radial feeder."""
    physics = rig.physics
    links: dict[int, list[tuple[int, tuple[int, int]]]] = {}
    for branch in physics.branches:
        a, b = branch
        links.setdefault(a, []).append((b, branch))
        links.setdefault(b, []).append((a, branch))
    x_to = {physics.head_bus: 0.0}
    queue = deque([physics.head_bus])
    while queue:
        here = queue.popleft()
        for there, branch in links.get(here, []):
            if there not in x_to:
                x_to[there] = x_to[here] + physics.impedance_ohm(branch)[1]
                queue.append(there)
    return x_to[bus]


def _replay(rig: HilRig) -> PhysicsState:
    """An independent power flow of the same feeder with every DER's ``(p, q)`` as the rig's
    devices hold them now: what the rig must have solved if it passed the vars through."""
    physics = FeederPhysics(load_scale=1.0)
    for name, inv in rig.inverters.items():
        physics.add_der(name, inv.bus)
        physics.set_der(name, inv.p_kw, inv.q_kvar)
    for name, bat in rig.batteries.items():
        physics.add_der(name, bat.bus)
        physics.set_der(name, bat.p_kw)
    return physics.solve()


async def test_an_inverter_absorbing_vars_lowers_its_bus_voltage(rig: HilRig) -> None:
    dev = rig.device(f"pv{BUS:02d}")
    link = ModbusTcpLink(dev.host, dev.port, timeout_s=2.0, monotonic=rig.monotonic)
    drv = SunSpecInverter(dev.name, link, dev.unit, rating_kw=dev.p_max_kw, revert_s=600)
    p_kw = SUN * dev.p_max_kw  # the ceiling at the sun's output: no watts are lost
    try:
        reading = await drv.read()
        assert reading.reactive
        await drv.write(PvSetpoint(device=dev.name, p_max_kw=p_kw, q_kvar=0.0))
        base = await rig.step()
        result = await drv.write(PvSetpoint(device=dev.name, p_max_kw=p_kw, q_kvar=Q_KVAR))
        absorbing = await rig.step()  # the same instant: the same load and sun
        measured = (await drv.read()).q_kvar
    finally:
        await link.close()
    assert result.q_kvar is not None
    assert not result.q_clamped
    q_kvar = result.q_kvar  # in 0.1 % steps of 150 kW: -79.95
    assert q_kvar == pytest.approx(Q_KVAR, abs=0.15 / 2)
    assert measured == pytest.approx(q_kvar, abs=0.01)
    assert absorbing.der_kw == pytest.approx(base.der_kw)  # the watts did not move
    # the rig solved the feeder with those vars in it (to the power flow's tolerance: the
    # rig's solve is warm-started, the replay's is not)
    replay = _replay(rig)
    assert absorbing.v_pu[BUS] == pytest.approx(replay.v_pu[BUS], abs=1e-6)
    assert absorbing.head_q_kvar == pytest.approx(replay.head_q_kvar, abs=0.01)

    # the head supplies the absorbed vars plus the reactive losses they add: at least |q|, and
    # to first order at most |q| (1 + 2 X_path Q_head / V_bus²) (every branch of the path
    # carries at most the head's vars and sits at a voltage at least the bus's)
    x_ohm = _path_x_ohm(rig, BUS)
    v_nominal = base.head_v_ll_v / base.v_pu[1]
    v_bus = base.v_pu[BUS] * v_nominal
    dq_head = absorbing.head_q_kvar - base.head_q_kvar
    loss_bound = 2.0 * x_ohm * base.head_q_kvar * 1000.0 / v_bus**2
    assert -q_kvar <= dq_head <= -q_kvar * (1.0 + loss_bound), (dq_head, loss_bound)
    # the bus voltage falls by X_path ΔQ / V (linearised DistFlow), ΔQ between what the
    # inverter absorbs and what the head supplies for it
    dv_v = (absorbing.v_pu[BUS] - base.v_pu[BUS]) * v_nominal
    assert dv_v < 0.0
    low, high = (x_ohm * 1000.0 * q / v_bus for q in (-q_kvar, dq_head))
    assert low * 0.99 <= -dv_v <= high * 1.01, (-dv_v, low, high)
