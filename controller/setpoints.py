"""From a dispatch to the setpoints written, one per device that answered this interval (pure).

The dispatch gives each unit a power; what a device is sent depends on its kind:

- a PV inverter gets a ceiling on its output: the dispatched power when the dispatch curtails
  it, its full rating when it does not (so a sunnier next interval is not held back by a
  ceiling nobody asked for);
- a battery gets its power (discharge positive);
- a controllable load gets a ceiling on its draw: the dispatched draw when the dispatch sheds
  it, its rating when it serves the load's whole demand.

An inverter dispatched in reactive power too (``reactive``) gets its vars beside its ceiling.
Where the dispatch curtailed it to make room for them, the ceiling is that room; where it did
not, the ceiling stays open and, should the sun rise, the inverter gives up vars first
(active-power priority): vars never hold the sun back.

"Not curtailed" and "not shed" allow ``UNCAPPED_MARGIN_KW`` for the solver's tolerance.

Firm limits: while a limit is in force, a device left "uncapped" could carry the head past it
on its own within the interval (the sun comes out from behind a cloud, a load switches on).
So under an export limit the inverters not curtailed get a ceiling too, and under an import
limit the loads not shed: the headroom the dispatch leaves between its predicted head import
and the limit it held (``Headroom``) is spread over them in proportion to how far each could
rise (rating less dispatch). A device never gets a ceiling below its dispatch, and when the
headroom is larger than all of them could rise together nothing is capped. Under an export
limit each inverter's ceiling also carries its revert value (``revert_ceilings``), for when
feederd stops rewriting it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from controller.snapshot import EstimatorState, Snapshot
from devices import BatterySetpoint, LoadSetpoint, PvSetpoint, Setpoint
from optimizer import DispatchResult

__all__ = [
    "UNCAPPED_MARGIN_KW",
    "Headroom",
    "firm_ceilings",
    "load_ceiling_kw",
    "pv_ceiling_kw",
    "revert_ceilings",
    "setpoints",
]

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Headroom:
    """What an interval's dispatch left between its prediction and the limits it held (kW,
    the limits as given to the dispatch: corrected, margin inside)."""

    predicted_import_kw: float
    import_limit_kw: float | None = None
    export_limit_kw: float | None = None

    @property
    def import_kw(self) -> float | None:
        """How far the head import may still rise (``None``: no import limit)."""
        if self.import_limit_kw is None:
            return None
        return max(self.import_limit_kw - self.predicted_import_kw, 0.0)

    @property
    def export_kw(self) -> float | None:
        """How far the export may still rise (``None``: no export limit)."""
        if self.export_limit_kw is None:
            return None
        return max(self.predicted_import_kw + self.export_limit_kw, 0.0)


def firm_ceilings(
    dispatched_kw: Mapping[str, float], rating_kw: Mapping[str, float], headroom_kw: float
) -> dict[str, float]:
    """Ceilings for the uncapped devices ``dispatched_kw`` (each may rise to its rating) that
    keep their rise together within ``headroom_kw``: each gets its dispatch plus a share of the
    headroom in proportion to its room. Empty when they cannot use up the headroom."""
    room = {n: max(rating_kw[n] - p, 0.0) for n, p in dispatched_kw.items()}
    total = sum(room.values())
    if total <= headroom_kw or total <= 0.0:
        return {}
    share = max(headroom_kw, 0.0) / total
    return {n: dispatched_kw[n] + share * r for n, r in room.items()}


def revert_ceilings(
    pv_ceiling_kw: Mapping[str, float], battery_kw: Mapping[str, float]
) -> dict[str, float]:
    """What each inverter's limit reverts to under an export limit, where it takes a revert
    value (704): its ceiling, less its share of what the batteries are charging (they revert
    to idle), so that the export the ceilings hold now holds without feederd."""
    total = sum(pv_ceiling_kw.values())
    charging = sum(max(-p, 0.0) for p in battery_kw.values())
    keep = max(1.0 - charging / total, 0.0) if total > 0 else 0.0
    return {name: c * keep for name, c in pv_ceiling_kw.items()}


def setpoints(
    result: DispatchResult,
    snapshot: Snapshot,
    state: EstimatorState,
    headroom: Headroom | None = None,
    *,
    reactive: bool = False,
    available_kw: Mapping[str, float] | None = None,
) -> dict[str, Setpoint]:
    """The setpoint of every dispatched device with a reading in ``snapshot``; with
    ``headroom``, firm ceilings for the devices that could carry the head past a limit; with
    ``reactive``, the dispatched reactive power of each inverter that can take one.
    ``available_kw`` is what each inverter was dispatched against (its sun, anticipated along
    its ramp), else the estimate in ``state``: an inverter dispatched to all of it is not
    curtailed."""
    available = state.pv_available_kw if available_kw is None else available_kw
    pv_ceiling: dict[str, float] = {}
    pv_q: dict[str, float] = {}
    uncapped_pv: dict[str, float] = {}
    rise_to: dict[str, float] = {}
    for name, p in result.pv_kw.items():
        pv = snapshot.pv.get(name)
        if pv is not None:
            ceiling = pv_ceiling_kw(
                p, w_max_kw=pv.w_max_kw, available_kw=available.get(name, math.inf)
            )
            if reactive and pv.reactive:
                pv_q[name] = result.pv_kvar.get(name, 0.0)
            pv_ceiling[name] = ceiling
            if ceiling > p + UNCAPPED_MARGIN_KW:  # not curtailed: free to rise to its ceiling
                uncapped_pv[name] = p
                rise_to[name] = ceiling
    load_ceiling: dict[str, float] = {}
    unshed: dict[str, float] = {}
    for name, p in result.load_kw.items():
        load = snapshot.loads.get(name)
        if load is not None:
            ceiling = load_ceiling_kw(
                p, rating_kw=load.rating_kw, demand_kw=state.load_demand_kw.get(name)
            )
            load_ceiling[name] = ceiling
            if ceiling >= load.rating_kw:
                unshed[name] = min(p, load.rating_kw)
    if headroom is not None and math.isfinite(headroom.predicted_import_kw):
        if (room := headroom.export_kw) is not None:
            pv_ceiling.update(firm_ceilings(uncapped_pv, rise_to, room))
        if (room := headroom.import_kw) is not None:
            ratings = {n: snapshot.loads[n].rating_kw for n in unshed}
            load_ceiling.update(firm_ceilings(unshed, ratings, room))
    revert = (
        revert_ceilings(pv_ceiling, result.battery_kw)
        if headroom is not None and headroom.export_kw is not None
        else {}
    )
    out: dict[str, Setpoint] = {
        name: PvSetpoint(device=name, p_max_kw=c, q_kvar=pv_q.get(name), revert_kw=revert.get(name))
        for name, c in pv_ceiling.items()
    }
    for name, p in result.battery_kw.items():
        if name in snapshot.batteries:
            out[name] = BatterySetpoint(device=name, p_kw=p)
    out.update({name: LoadSetpoint(device=name, p_max_kw=c) for name, c in load_ceiling.items()})
    return out
