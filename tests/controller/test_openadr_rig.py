"""A utility's VTN dispatches the HIL feeder end to end: openleadr's own ``OpenADRServer`` on
loopback (HTTPS with client certificates, XML signatures both ways) and the real daemon with its
VEN, against the rig, graded by the rig's pandapower physics, never the controller's estimate.

- an event added at the VTN is accepted (optIn), stored, and held at the feeder head within two
  control intervals after its start; a modification (a tighter level) and a cancellation take
  effect;
- a VTN outage in the middle of an event leaves it in force, and the VEN registers again when the
  VTN is back;
- an event the feeder cannot deliver is opted out of, with the reason, once the plan sees it;
- the TELEMETRY_USAGE values the VTN receives are the journaled head import, at the granularity
  it asked for.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from structlog.testing import capture_logs

from controller.commands.rig.simulation import Simulation
from tests.controller.openadr_helpers import (
    INTERVAL_S,
    LIMIT_1_KW,
    LIMIT_2_KW,
    held,
    in_force,
    logged,
    metric,
    persisted,
    vtn_feeder,
)
from tests.support.vtn import Pki, Vtn
from tests.support.wait import until

WITHIN = 2
"""Issue 16: held at the head within two control intervals after the event's start."""


async def _registered(sim: Simulation, vtn: Vtn, times: int = 1) -> None:
    await until(
        lambda: len(vtn.registrations) >= times and metric(sim, "feederd_openadr_registered") == 1,
        f"registration {times} with the VTN",
    )


async def _head_after_steps(sim: Simulation, n: int) -> list[float]:
    """The physics' head import after each of ``n`` intervals (what that interval's setpoints
    did: the physics at the next tick)."""
    out = []
    for _ in range(n):
        await sim.step()
        out.append((await sim.physics()).head_p_kw)
    return out


def _first_held(measured: list[float], limit_kw: float) -> int | None:
    """The interval (1 = the first after the change) from which every measurement holds."""
    for k in range(1, len(measured) + 1):
        if all(held(m, limit_kw) for m in measured[k - 1 :]):
            return k
    return None


async def test_a_vtn_event_is_held_modified_and_cancelled_at_the_feeder_head(pki: Pki) -> None:
    async with Vtn(pki) as vtn, vtn_feeder(vtn) as sim:
        await _registered(sim, vtn)
        free = await _head_after_steps(sim, 2)
        assert all(not held(m, LIMIT_1_KW) for m in free), free  # the limit asks for something

        # level 1 (an import limit of 2,000 kW), from two intervals ahead for 30 intervals
        start = sim.clock.now() + dt.timedelta(seconds=2 * INTERVAL_S)
        vtn.add_event([(start, 30 * INTERVAL_S, 1)], event_id="hold")
        await until(lambda: bool(vtn.responses_to("hold", 0)), "the VEN's answer to the event")
        (answer,) = vtn.responses_to("hold", 0)
        assert (answer.opt_type, answer.response_code) == ("optIn", 200), answer
        assert in_force(sim) == ["oadr:hold:0:0"]
        assert metric(sim, "feederd_openadr_events_total", result="accepted") == 1

        while sim.clock.now() < start:
            await sim.step()
        measured = await _head_after_steps(sim, 6)
        first = _first_held(measured, LIMIT_1_KW)
        print(
            f"level 1 ({LIMIT_1_KW:.0f} kW) held from interval {first} after the start: {measured}"
        )
        assert first is not None, measured
        assert first <= WITHIN, measured

        # modification 1: level 2 (1,800 kW), taken at once
        assert vtn.modify_event("hold", values=[2]) == 1
        await until(lambda: bool(vtn.responses_to("hold", 1)), "the answer to modification 1")
        assert vtn.responses_to("hold", 1)[-1].opt_type == "optIn"
        assert in_force(sim) == ["oadr:hold:1:0"]
        assert metric(sim, "feederd_openadr_events_total", result="modified") == 1
        measured = await _head_after_steps(sim, 5)
        first = _first_held(measured, LIMIT_2_KW)
        print(
            f"level 2 ({LIMIT_2_KW:.0f} kW) held from interval {first} after the change: {measured}"
        )
        assert first is not None, measured
        assert first <= WITHIN, measured

        # the cancellation: the limit is lifted, the feeder imports what it did before
        vtn.cancel_event("hold")
        await until(lambda: not in_force(sim), "the event's cancellation at the daemon")
        assert metric(sim, "feederd_openadr_events_total", result="cancelled") == 1
        measured = await _head_after_steps(sim, 4)
        assert sim.daemon.dr.active.import_kw is None
        assert not held(measured[-1], LIMIT_2_KW), measured
        # every version the VTN sent is in the journal, the superseded and cancelled ones too
        assert persisted(sim) == ["oadr:hold:0:0", "oadr:hold:1:0"]
        assert sim.daemon.journal.live_events(sim.clock.now()) == []


async def test_a_vtn_outage_mid_event_leaves_the_event_in_force(pki: Pki) -> None:
    async with Vtn(pki) as vtn, vtn_feeder(vtn) as sim:
        await _registered(sim, vtn)
        start = sim.clock.now() + dt.timedelta(seconds=INTERVAL_S)
        vtn.add_event([(start, 40 * INTERVAL_S, 2)], event_id="outage")
        await until(lambda: in_force(sim) == ["oadr:outage:0:0"], "the event")
        while sim.clock.now() < start:
            await sim.step()
        before = await _head_after_steps(sim, 3)
        assert held(before[-1], LIMIT_2_KW), before

        await vtn.stop()  # the VTN goes away in the middle of the event
        await until(lambda: metric(sim, "feederd_openadr_vtn_up") == 0, "the VEN to see it gone")
        assert metric(sim, "feederd_openadr_refused_total", reason="connection") >= 1
        during = await _head_after_steps(sim, 6)
        assert all(held(m, LIMIT_2_KW) for m in during), during
        assert in_force(sim) == ["oadr:outage:0:0"]

        # back, having lost its registrations (openleadr's are in memory): the VEN registers again
        await vtn.restart(forget_registration=True)
        await _registered(sim, vtn, times=2)
        await until(lambda: metric(sim, "feederd_openadr_vtn_up") == 1, "the VTN up again")
        after = await _head_after_steps(sim, 3)
        assert all(held(m, LIMIT_2_KW) for m in after), after
        # the same event, sent again after the registration, is the one already held
        assert in_force(sim) == ["oadr:outage:0:0"]
        assert persisted(sim) == ["oadr:outage:0:0"]
        assert metric(sim, "feederd_openadr_events_total", result="accepted") == 1


async def test_telemetry_usage_reaches_the_vtn_as_the_journaled_head_import(pki: Pki) -> None:
    """The VTN asks for readings every two control intervals (10 s), reported every 20 s."""
    granularity_s = 2 * INTERVAL_S
    async with (
        Vtn(pki, report_granularity_s=granularity_s, report_back_s=2 * granularity_s) as vtn,
        vtn_feeder(vtn) as sim,
    ):
        await _registered(sim, vtn)
        await until(lambda: vtn.count("oadrCreatedReport") >= 1, "the VEN to create the reports")
        for _ in range(12):
            await sim.step()
        await until(
            lambda: len([r for r in vtn.reports if r.report == "TELEMETRY_USAGE"]) >= 4,
            "four TELEMETRY_USAGE values at the VTN",
        )
        journal = {
            dt.datetime.fromisoformat(r["at"]): r["import_kw"]
            for r in sim.daemon.journal.intervals()
        }
    usage = [r for r in vtn.reports if r.report == "TELEMETRY_USAGE"]
    status = [r for r in vtn.reports if r.report == "TELEMETRY_STATUS"]
    assert status, "no TELEMETRY_STATUS value reached the VTN"
    # every value the VTN holds is the head import the journal holds for that instant
    for r in usage:
        assert r.at in journal, (r.at, sorted(journal))
        assert r.value == pytest.approx(journal[r.at], abs=1e-9), (r.at, r.value, journal[r.at])
    # at the granularity asked
    stamps = sorted(r.at for r in usage)
    steps = {(b - a).total_seconds() for a, b in itertools.pairwise(stamps)}
    assert steps == {granularity_s}, sorted(steps)


async def test_an_event_the_feeder_cannot_deliver_is_opted_out_of_with_the_reason(
    pki: Pki,
) -> None:
    """A LOAD_DISPATCH setpoint of 500 kW: four 250 kW batteries cannot take 1,800 kW off the
    head. The VEN takes the event (it stays in force: the feeder does what it can), and once the
    plan predicts the shortfall it opts out, saying why."""
    with capture_logs() as logs:
        async with Vtn(pki) as vtn, vtn_feeder(vtn) as sim:
            await _registered(sim, vtn)
            start = sim.clock.now() + dt.timedelta(seconds=4 * INTERVAL_S)
            vtn.add_event(
                [(start, 20 * INTERVAL_S, 500.0)],
                signal="LOAD_DISPATCH",
                signal_type="setpoint",
                event_id="too-deep",
            )
            await until(lambda: bool(vtn.responses_to("too-deep")), "the answer to the event")
            assert in_force(sim) == ["oadr:too-deep:0:0"]
            for _ in range(3):  # the plan sees the event coming
                await sim.step()
            await until(
                lambda: vtn.responses_to("too-deep")[-1].opt_type == "optOut",
                "the VEN to opt out",
            )
            assert metric(sim, "feederd_openadr_opts_total", opt="optOut") >= 1
            assert in_force(sim) == ["oadr:too-deep:0:0"]
            # the VTN is told why, with the plan's figures
            out = vtn.responses_to("too-deep")[-1]
            assert out.response_description is not None
            assert "predicts a shortfall" in out.response_description
    (line,) = logged(logs, "openadr_opt", opt="optOut")
    assert line["vtn_event"] == "too-deep", line
    assert "shortfall" in line["reason"], line
