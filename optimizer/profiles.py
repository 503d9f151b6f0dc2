"""What the horizon sees at each step: loads, PV, prices and limits, the forecast applied.

`profiles(net, inp)` turns a `DispatchInput` and its `Forecast` (`optimizer.forecast`) into
arrays with the steps first, once per input (inputs are frozen, so the last one is kept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from optimizer.network import Network
from optimizer.units import DispatchInput

__all__ = ["Profiles", "profiles"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, kw_only=True)
class Profiles:
    """What the horizon sees, per step (the forecast applied; see `optimizer.forecast`).

    `p_load`/`q_load` are every bus's uncontrollable load in `net.order` (slack first), kW and
    kvar; `pv_upper` each PV unit's `min(available, p_max)`, kW; `import_limit`/`export_limit`
    the head limits in kW (NaN: none); prices per kWh, the export price at most the import
    price."""

    dt_h: FloatArray
    price: FloatArray
    export_price: FloatArray
    p_load: FloatArray
    q_load: FloatArray
    pv_upper: FloatArray
    import_limit: FloatArray
    export_limit: FloatArray

    @property
    def value_end(self) -> float:
        """The import price averaged over the horizon's time."""
        return float(np.dot(self.price, self.dt_h) / np.sum(self.dt_h))


_PROFILES: list[tuple[Network, DispatchInput, Profiles]] = []


def profiles(net: Network, inp: DispatchInput) -> Profiles:
    """The per-step profiles of `inp` on `net` (the last one kept: inputs are frozen)."""
    kept = _PROFILES[0] if _PROFILES else None  # one read: the flex solves run on a thread
    if kept is not None and kept[0] is net and kept[1] is inp:
        return kept[2]
    out = _profiles(net, inp)
    _PROFILES[:] = [(net, inp, out)]
    return out


def _profiles(net: Network, inp: DispatchInput) -> Profiles:
    h = inp.horizon
    fc = inp.forecast
    dt_h = np.asarray(inp.step_durations_s, dtype=float) / 3600.0
    order = net.order
    p0 = np.array([inp.loads_kw.get(b, 0.0) for b in order], dtype=float)
    q0 = np.array([inp.loads_kvar.get(b, 0.0) for b in order], dtype=float)
    pv_now = np.array([u.available_kw for u in inp.pv], dtype=float)
    pv_max = np.array([u.p_max_kw for u in inp.pv], dtype=float)
    if fc is None:
        ratio, pv_ratio = np.ones(h), np.ones(h)
        price = np.full(h, inp.price_per_kwh)
        export_price = price.copy()
    else:
        ratio, pv_ratio = fc.steps("load", h, 1.0), fc.steps("pv", h, 1.0)
        price = fc.steps("price", h, inp.price_per_kwh)
        export_price = fc.steps("export_price", h, math.nan)
        export_price = np.where(np.isnan(export_price), price, export_price)
    p_load = ratio[:, None] * p0[None, :]
    q_load = ratio[:, None] * q0[None, :]
    available = pv_ratio[:, None] * pv_now[None, :]
    if fc is not None and h > 1:
        col = {b: i for i, b in enumerate(order)}
        for bus, values in fc.frame_columns("load_kw", h).items():
            i = col.get(bus)  # type: ignore[call-overload]
            if i is None:
                continue  # refused by the dispatcher's check
            p_load[1:, i] = values[1:]
            if p0[i] != 0.0:
                q_load[1:, i] = q0[i] * values[1:] / p0[i]
        unit = {u.name: k for k, u in enumerate(inp.pv)}
        for name, values in fc.frame_columns("pv_kw", h).items():
            k = unit.get(name)  # type: ignore[call-overload]
            if k is not None:
                available[1:, k] = values[1:]
    pv_upper = np.minimum(available, pv_max[None, :])
    pv_upper[0, :] = [u.p_upper_kw for u in inp.pv]
    if fc is None:
        imp_lim = np.full(h, math.nan if inp.import_limit_kw is None else inp.import_limit_kw)
        exp_lim = np.full(h, math.nan if inp.export_limit_kw is None else inp.export_limit_kw)
    else:
        imp_lim = fc.limit_steps("import_limit_kw", h, inp.import_limit_kw)
        exp_lim = fc.limit_steps("export_limit_kw", h, inp.export_limit_kw)
    return Profiles(
        dt_h=dt_h,
        price=price,
        export_price=np.minimum(export_price, price),
        p_load=p_load,
        q_load=q_load,
        pv_upper=pv_upper,
        import_limit=imp_lim,
        export_limit=exp_lim,
    )
