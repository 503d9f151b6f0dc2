"""State estimation in the daemon, end to end: the HIL rig's physics, a real Modbus gateway of
SunSpec bus meters (one unit per bus), the real daemon, one simulated clock.

The estimate is graded against the rig's pandapower physics, never against the controller's
own picture. The tolerances come from the sigmas the config gives the meters (the estimator's
weights): a quantity the estimate infers from the head meter (a bus whose meter was dropped)
is good to a few times the head meter's sigma, and a voltage to a few times the estimate's own
``v_sigma``.
"""

from __future__ import annotations

import math

import pytest
import structlog

from controller.records import CycleStatus
from hil import DeviceFault
from tests.controller.estimation_helpers import meter_name, metered_feeder

LOAD_BUSES = tuple(range(2, 34))
"""Every load bus of the 33-bus case has a meter."""
LIAR = 24
"""One of the two largest loads of the case (420 kW, 200 kvar at a scale of 1)."""
ACCURACY = 0.01
"""The default accuracy class (1% of the reading), the sigma the estimator gives each meter."""


def _head_sigma_kw(head_kw: float) -> float:
    return ACCURACY * abs(head_kw)


async def test_the_dispatch_takes_its_loads_from_the_estimate() -> None:
    """With a meter at every load bus the dispatch's bus loads are what the meters measure
    (the estimate), not the case's shape scaled to the head, and the estimated voltages
    are the physics' within the estimate's own spread."""
    async with metered_feeder(LOAD_BUSES) as fm:
        records = [await fm.step() for _ in range(3)]
        controller = fm.daemon.controller
        inp = controller.last_input
        metrics = fm.daemon.metrics
    assert all(r.status is CycleStatus.OPTIMAL for r in records), [r.status for r in records]
    state = fm.states[-1]
    assert inp is not None
    for bus in LOAD_BUSES:  # each bus's load: its meter, within the meter's class
        true = state.bus_p_kw[bus]
        assert inp.loads_kw[bus] == pytest.approx(true, abs=3 * ACCURACY * true + 0.5), bus
    rec = records[-1]
    assert rec.estimation_dropped == ()
    assert rec.estimated_v_pu is not None
    v_sigma = metrics.estimation_v_sigma_max_pu._value.get()
    assert 0 < v_sigma < 0.005
    errors = [abs(rec.estimated_v_pu[b] - state.v_pu[b]) for b in state.v_pu]
    assert max(errors) <= 3 * v_sigma, (max(errors), v_sigma)
    assert rec.estimated_v_min_pu == min(rec.estimated_v_pu.values())
    assert metrics.estimation_meters.labels("fresh")._value.get() == len(LOAD_BUSES)
    assert metrics.estimation_meters.labels("stale")._value.get() == 0
    # head P and Q, and P, Q and V at each bus
    assert metrics.estimation_measurements._value.get() == 3 + 3 * len(LOAD_BUSES)  # head P, Q, V
    assert math.isfinite(metrics.estimation_residual._value.get())
    assert rec.estimation_residual == metrics.estimation_residual._value.get()


@pytest.mark.parametrize(
    ("lie", "what"),
    [
        pytest.param(lambda p: -p, "wrong-sign", id="wrong-sign"),
        pytest.param(lambda p: 2.0 * p, "wrong-ct-ratio", id="wrong-ct-ratio"),
    ],
)
async def test_a_meter_that_lies_is_dropped_named_once_and_the_dispatch_goes_on(
    lie: object, what: str
) -> None:
    intervals = 4
    with structlog.testing.capture_logs() as logs:
        async with metered_feeder(LOAD_BUSES) as fm:
            fm.lie[LIAR] = lie  # type: ignore[assignment]
            records = [await fm.step() for _ in range(intervals)]
            inp = fm.daemon.controller.last_input
            bad = fm.daemon.metrics.estimation_bad_data
    assert all(r.status is CycleStatus.OPTIMAL for r in records), (what, records[-1].status)
    assert [r.estimation_dropped for r in records] == [(meter_name(LIAR),)] * intervals
    assert bad.labels(meter_name(LIAR))._value.get() == intervals
    said = [e for e in logs if e["event"] == "estimation_bad_data"]
    assert len(said) == 1, said  # once for the episode, not every interval
    assert said[0]["device"] == meter_name(LIAR)
    assert said[0]["bus"] == LIAR
    assert said[0]["log_level"] == "warning"
    # the bus's load comes from the rest (the head less the other meters), not from the lie
    state = fm.states[-1]
    assert inp is not None
    true = state.bus_p_kw[LIAR]
    assert inp.loads_kw[LIAR] == pytest.approx(true, abs=3 * _head_sigma_kw(state.head_p_kw))


async def test_a_frozen_meter_is_dropped_once_its_bus_moves_away_and_believed_again() -> None:
    """A meter whose registers stop changing agrees while its bus's load holds; when the feeder's
    load falls to 40% it still reads the old value: dropped and named; when the load comes back
    to where it froze, it is believed again (one line each way)."""

    def scale(t: float) -> float:
        return 0.4 if 10.0 <= t < 30.0 else 1.0

    with structlog.testing.capture_logs() as logs:
        async with metered_feeder(LOAD_BUSES, rig={"load_scale": scale}) as fm:
            first = await fm.step()  # t = 0: read at full load, then frozen
            fm.gateway.set_fault(LIAR, DeviceFault(frozen=True))
            records = [first, *[await fm.step() for _ in range(7)]]  # t = 5 .. 35
    dropped = [r.estimation_dropped for r in records]
    name = meter_name(LIAR)
    assert dropped == [(), (), (name,), (name,), (name,), (name,), (), ()], dropped
    assert all(r.status is CycleStatus.OPTIMAL for r in records)
    events = [
        e["event"]
        for e in logs
        if e["event"] in ("estimation_bad_data", "estimation_bad_data_cleared")
    ]
    assert events == ["estimation_bad_data", "estimation_bad_data_cleared"]


async def test_a_missing_meter_leaves_its_bus_to_the_pseudo_load_and_is_counted_stale() -> None:
    async with metered_feeder(LOAD_BUSES) as fm:
        await fm.step()  # the first complete snapshot: the daemon is armed
        fm.gateway.set_silent(LIAR)  # costs one (real) request timeout an interval
        records = [await fm.step() for _ in range(2)]
        metrics = fm.daemon.metrics
    assert all(r.status is CycleStatus.OPTIMAL for r in records)
    assert meter_name(LIAR) in records[-1].devices_missing
    assert metrics.estimation_meters.labels("fresh")._value.get() == len(LOAD_BUSES) - 1
    assert metrics.estimation_meters.labels("stale")._value.get() == 1
    assert records[-1].estimation_dropped == ()


async def test_with_estimation_off_the_dispatch_is_as_before() -> None:
    async with metered_feeder(LOAD_BUSES, overrides={"estimation": {"enabled": False}}) as fm:
        rec = await fm.step()
        inp = fm.daemon.controller.last_input
        net = fm.loaded.network
    assert fm.daemon.controller.bus_estimator is None
    assert rec.estimated_v_pu is None
    assert rec.estimation_residual is None
    assert inp is not None
    # the case's shape, one factor for every bus
    factors = {b.id: inp.loads_kw[b.id] / b.p_load_kw for b in net.buses if b.p_load_kw}
    assert max(factors.values()) == pytest.approx(min(factors.values()), rel=1e-9)
