"""End to end: firm limits with the real daemon and the varied HIL rig on a simulated clock,
graded by the rig's pandapower physics.

A cloud's edge passes in half a minute and the sun on every inverter rises by 2% of its rating
a second: 180 kW an interval on the rig's twelve 150 kW inverters, more than the limit's
feedback can follow (it learns one interval's error and applies it the next). Inverters the dispatch leaves uncapped ride the sun past the
export cap; with firm limits (the default) they share the headroom as ceilings, and the cap
holds in every interval after the first two, while the batteries take up the sun.
"""

from __future__ import annotations

from typing import Any

from hil import PhysicsState
from hil.variation import RigVariation
from tests.support.feeder import feeder

INTERVALS = 14
LIMIT_KW = 200.0
HOLD = 0.005
"""Issue 14: after the first two intervals of a limit, never past it by more than 0.5%."""


def _sun(t: float) -> float:
    """Overcast (30%) until 12 s, then the sun comes out at 2% a second, to 95%."""
    return min(0.3 + 0.02 * max(t - 12.0, 0.0), 0.95)


async def _run(**control: Any) -> tuple[list[PhysicsState], float]:
    rig: dict[str, Any] = {
        "variation": RigVariation(seed=2),
        "load_scale": lambda _t: 0.3,
        "pv_available_frac": _sun,
    }
    async with feeder(rig=rig, dr={"export_limit_kw": LIMIT_KW}, control=control) as sim:
        states = []
        for _ in range(INTERVALS):
            states.append(await sim.rig.step())
            await sim.daemon.controller.cycle()
            sim.clock.advance(sim.interval_s)
        return states, sim.rig.battery_kw


async def test_an_export_cap_holds_as_a_cloud_clears() -> None:
    free, _ = await _run(firm_limits=False, ramp_anticipation=False)
    firm, battery_kw = await _run()
    over = {
        "free": [-s.head_p_kw - LIMIT_KW for s in free[2:]],
        "firm": [-s.head_p_kw - LIMIT_KW for s in firm[2:]],
    }
    # the sun does rise past what the feeder can take: uncapped, the export runs over the cap
    assert max(over["free"]) > 0.02 * LIMIT_KW, over["free"]
    # firm: within 0.5% in every interval after the first two
    assert max(over["firm"]) <= HOLD * LIMIT_KW, over["firm"]
    # and the sun is not thrown away for it: the batteries charge (the rig's physics says)
    assert battery_kw < -100.0
