"""From a dispatch to the setpoints written, one per device that answered this interval (pure).

The dispatch gives each unit a power; what a device is sent depends on its kind:

- a PV inverter gets a ceiling on its output: the dispatched power when the dispatch curtails
  it, its full rating when it does not (so a sunnier next interval is not held back by a
  ceiling nobody asked for);
- a battery gets its power (discharge positive);
- a controllable load gets a ceiling on its draw: the dispatched draw when the dispatch sheds
  it, its rating when it serves the load's whole demand.

"Not curtailed" and "not shed" allow ``UNCAPPED_MARGIN_KW`` for the solver's tolerance.
"""

from __future__ import annotations

import math

from controller.snapshot import EstimatorState, Snapshot
from devices import BatterySetpoint, LoadSetpoint, PvSetpoint, Setpoint
from optimizer import DispatchResult

__all__ = ["UNCAPPED_MARGIN_KW", "load_ceiling_kw", "pv_ceiling_kw", "setpoints"]

UNCAPPED_MARGIN_KW = 0.5


def pv_ceiling_kw(dispatched_kw: float, *, w_max_kw: float, available_kw: float | None) -> float:
    """The ceiling for an inverter dispatched at ``dispatched_kw``."""
    uncurtailed = dispatched_kw >= w_max_kw - 1e-6 or (
        available_kw is not None and dispatched_kw >= available_kw - UNCAPPED_MARGIN_KW
    )
    return w_max_kw if uncurtailed else dispatched_kw


def load_ceiling_kw(dispatched_kw: float, *, rating_kw: float, demand_kw: float | None) -> float:
    """The ceiling for a load dispatched to draw ``dispatched_kw``."""
    unshed = demand_kw is not None and dispatched_kw >= demand_kw - UNCAPPED_MARGIN_KW
    return rating_kw if unshed else dispatched_kw


def setpoints(
    result: DispatchResult, snapshot: Snapshot, state: EstimatorState
) -> dict[str, Setpoint]:
    """The setpoint of every dispatched device with a reading in ``snapshot``."""
    out: dict[str, Setpoint] = {}
    for name, p in result.pv_kw.items():
        pv = snapshot.pv.get(name)
        if pv is not None:
            ceiling = pv_ceiling_kw(
                p, w_max_kw=pv.w_max_kw, available_kw=state.pv_available_kw.get(name, math.inf)
            )
            out[name] = PvSetpoint(device=name, p_max_kw=ceiling)
    for name, p in result.battery_kw.items():
        if name in snapshot.batteries:
            out[name] = BatterySetpoint(device=name, p_kw=p)
    for name, p in result.load_kw.items():
        load = snapshot.loads.get(name)
        if load is not None:
            ceiling = load_ceiling_kw(
                p, rating_kw=load.rating_kw, demand_kw=state.load_demand_kw.get(name)
            )
            out[name] = LoadSetpoint(device=name, p_max_kw=ceiling)
    return out
