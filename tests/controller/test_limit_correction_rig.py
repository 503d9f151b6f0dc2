"""End to end: the limits' feedback with the real daemon and the varied HIL rig on a simulated
clock, graded by the rig's pandapower physics, with the feedback on and off.

The dispatch re-anchors its loads on the head meter each interval, so what it cannot know is
what moves within the interval: here the sun, by 0.1% of the PV's rating a second (a cloud
bank's edge: 60% of the sun in ten minutes), 9 kW an interval on the rig's 1.8 MW of PV.
Without feedback the head sits that far past the limit interval after interval; with it, the
error is learnt from the first interval at the limit and taken off the next dispatch's limit.
"""

from __future__ import annotations

import math
from typing import Any

from hil import PhysicsState
from hil.variation import RigVariation
from tests.support.feeder import feeder

INTERVALS = 16
SUN_RAMP_PER_S = 0.001
"""Of the PV's rating, per second."""
HOLD = 0.005
"""Issue 14: after the first two intervals of a limit, never past it by more than 0.5%."""


async def _run(
    *, correction: bool, load: float, sun0: float, sun_ramp: float, **limits: float
) -> tuple[list[PhysicsState], list[Any], Any]:
    rig: dict[str, Any] = {
        "variation": RigVariation(seed=3),
        "load_scale": lambda _t: load,
        "pv_available_frac": lambda t: min(max(sun0 + sun_ramp * t, 0.0), 1.0),
    }
    # the feedback alone, on or off: firm limits and ramp anticipation (which would take the
    # sun's ramp out of the model's error) have tests of their own
    control = {"limit_correction": correction, "firm_limits": False, "ramp_anticipation": False}
    async with feeder(rig=rig, dr=limits, control=control) as sim:
        states, records = [], []
        for _ in range(INTERVALS):
            states.append(await sim.rig.step())
            records.append(await sim.daemon.controller.cycle())
            sim.clock.advance(sim.interval_s)
        gauge = sim.daemon.metrics.registry.get_sample_value
        metric = (
            gauge("feederd_limit_correction_kw", {"limit": "import"}),
            gauge("feederd_limit_correction_kw", {"limit": "export"}),
        )
        journal = sim.daemon.journal.records(limit=1)[-1]
        return states, records, (metric, journal)


async def test_an_import_limit_holds_while_the_sun_fades() -> None:
    limit = 1000.0
    runs = {
        on: await _run(
            correction=on, load=0.7, sun0=0.8, sun_ramp=-SUN_RAMP_PER_S, import_limit_kw=limit
        )
        for on in (False, True)
    }
    over = {on: [s.head_p_kw - limit for s in states[2:]] for on, (states, _, _) in runs.items()}
    # the first interval is before any dispatch, far over: the limit starts there
    assert runs[True][0][0].head_p_kw > limit * 1.1
    # without feedback the model's error keeps the head past the limit by more than 0.5%
    assert max(over[False]) > HOLD * limit, over[False]
    # with it, within 0.5% in every interval after the first two, and not far below (the
    # batteries are not asked for more than the limit needs: within 1% below on average)
    assert max(over[True]) <= HOLD * limit, over[True]
    assert sum(over[True]) / len(over[True]) >= -0.01 * limit, over[True]
    # the correction is what the sun takes away in an interval, in the record, the metric
    # and the journal
    records = runs[True][1]
    last = records[-1]
    assert last.import_correction_kw is not None
    assert last.export_correction_kw is None
    assert 0.5 * 9.0 < last.import_correction_kw < 2.0 * 9.0
    (metric_import, metric_export), journal = runs[True][2]
    assert metric_import == last.import_correction_kw
    assert metric_export is not None
    assert math.isnan(metric_export)  # no export limit
    assert journal["import_correction_kw"] == last.import_correction_kw
    assert journal["model_error_kw"] == last.model_error_kw
    assert all(r.import_correction_kw is None for r in runs[False][1])


async def test_an_export_limit_holds_while_the_sun_comes_out() -> None:
    limit = 300.0
    runs = {
        on: await _run(
            correction=on, load=0.3, sun0=0.85, sun_ramp=SUN_RAMP_PER_S, export_limit_kw=limit
        )
        for on in (False, True)
    }
    over = {on: [-s.head_p_kw - limit for s in states[2:]] for on, (states, _, _) in runs.items()}
    assert -runs[True][0][0].head_p_kw > limit * 1.1
    assert max(over[False]) > HOLD * limit, over[False]
    assert max(over[True]) <= HOLD * limit, over[True]
    assert sum(over[True]) / len(over[True]) >= -0.02 * limit, over[True]
    last = runs[True][1][-1]
    assert last.export_correction_kw is not None
    assert last.export_correction_kw > 0
    assert last.import_correction_kw is None
