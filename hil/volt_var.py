"""The volt-var curve of a simulated inverter (SunSpec 126 or 705): registers to vars.

Pure: the functions take a model's decoded values (engineering units, as the register image
holds them) and return what the inverter does with them. No clock: the curve acts at once (the
open-loop response time and the revert timer ``RvrtTms`` are not simulated; a curve stays in
force until it is disabled).

- Model 126 (123 chain): one curve of ``NPt = 4`` points in its 20 slots. The curve in force is
  ``curve[ActCrv - 1]`` while ``ModEna`` bit 0 is set; its first ``ActPt`` points count.
- Model 705 (704 chain): ``NCrv = 2`` stored curves of ``NPt = 4`` points. The first is
  read-only and holds the curve in force (writes to it are refused); a client writes the second
  and asks for it with ``AdptCrvReq = 2``: a valid curve is copied into the first and
  ``AdptCrvRslt`` says COMPLETED, an invalid one leaves it and says FAILED. In force while
  ``Ena == 1``.

The dependent reference must be WMax (126 ``DeptRef = 1``, 705 ``DeptRef = 0`` W_MAX_PCT):
the simulated inverter refuses the others. Vars are positive when injected. Between points the
curve is linear in voltage; below the first point it holds the first point's vars, above the last
the last's. A curve whose points are not implemented or whose voltages do not increase gives no
vars (``None``): the inverter ignores it, as it refuses to enable or adopt it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from devices.sunspec import Value
from devices.volt_var import IEEE1547_CATEGORY_B

__all__ = [
    "REPEATS",
    "SCALE_FACTORS",
    "VOLT_VAR_MODELS",
    "accepts",
    "adopt",
    "curve_points",
    "initial_values",
    "q_pct_at",
    "volt_var_q_pct",
]

VOLT_VAR_MODELS = (126, 705)
N_PT = 4
N_CRV_705 = 2
REPEATS: dict[int, dict[str, int]] = {126: {"curve": 1}, 705: {"Crv": N_CRV_705, "Crv.Pt": N_PT}}
"""How the simulated register image lays out the repeating groups."""
SCALE_FACTORS: dict[int, dict[str, int]] = {
    126: {"V_SF": -1, "DeptRef_SF": -1, "RmpIncDec_SF": 0},
    705: {"V_SF": -1, "DeptRef_SF": -1, "RspTms_SF": 0},
}
"""0.1 % steps for voltages and vars."""
_WMAX_REF = {126: 1, 705: 0}
_ADOPT_COMPLETED, _ADOPT_FAILED = 1, 2
_705_CURVE_POINTS = ("ActPt", "DeptRef", "Pri", "VRef", "VRefAutoEna", "VRefAutoTms", "RspTms")


def initial_values(model_id: int) -> dict[str, Value]:
    """The block as the inverter leaves the factory: the IEEE 1547 category B curve stored,
    volt-var disabled."""
    default = IEEE1547_CATEGORY_B.points
    if model_id == 126:
        values: dict[str, Value] = {
            "ActCrv": 1,
            "ModEna": 0,
            "WinTms": 0,
            "RvrtTms": 0,
            "RmpTms": 0,
            "NCrv": 1,
            "NPt": N_PT,
            "curve[0].ActPt": len(default),
            "curve[0].DeptRef": _WMAX_REF[126],
            "curve[0].ReadOnly": 0,
        }
        for i, (v, q) in enumerate(default, start=1):
            values[f"curve[0].V{i}"] = 100.0 * v
            values[f"curve[0].VAr{i}"] = q
        return values
    values = {
        "Ena": 0,
        "AdptCrvReq": 0,
        "AdptCrvRslt": _ADOPT_COMPLETED,
        "NPt": N_PT,
        "NCrv": N_CRV_705,
        "RvrtTms": 0,
        "RvrtRem": 0,
        "RvrtCrv": 0,
    }
    for c in range(N_CRV_705):
        crv = f"Crv[{c}]"
        values |= {
            f"{crv}.ActPt": len(default),
            f"{crv}.DeptRef": _WMAX_REF[705],
            f"{crv}.Pri": 0,  # active power has priority
            f"{crv}.VRef": 100.0,
            f"{crv}.VRefAuto": 100.0,
            f"{crv}.VRefAutoEna": 0,
            f"{crv}.VRefAutoTms": 0,
            f"{crv}.RspTms": 5,
            f"{crv}.ReadOnly": 1 if c == 0 else 0,
        }
        for i, (v, q) in enumerate(default):
            values[f"{crv}.Pt[{i}].V"] = 100.0 * v
            values[f"{crv}.Pt[{i}].Var"] = q
    return values


def curve_points(model_id: int, values: Mapping[str, Value]) -> list[tuple[float, float]] | None:
    """The ``(v_pu, q_pct)`` points of the curve in force (enabled or not), or ``None`` when
    there is none usable (no active curve, points not implemented, voltages not increasing, a
    reference other than WMax)."""
    if model_id == 126:
        active = values.get("ActCrv")
        if active != 1:  # the simulated 126 has one curve
            return None
        crv = "curve[0]."
        names = [(f"{crv}V{i}", f"{crv}VAr{i}") for i in range(1, N_PT + 1)]
    else:
        crv = "Crv[0]."
        names = [(f"{crv}Pt[{i}].V", f"{crv}Pt[{i}].Var") for i in range(N_PT)]
    return _points(model_id, values, crv, names)


def _points(
    model_id: int, values: Mapping[str, Value], crv: str, names: list[tuple[str, str]]
) -> list[tuple[float, float]] | None:
    n = values.get(f"{crv}ActPt")
    if values.get(f"{crv}DeptRef") != _WMAX_REF[model_id]:
        return None
    if not isinstance(n, int) or not 2 <= n <= len(names):
        return None
    points: list[tuple[float, float]] = []
    for v_name, q_name in names[:n]:
        v, q = values.get(v_name), values.get(q_name)
        if not isinstance(v, int | float) or not isinstance(q, int | float):
            return None
        if points and v / 100.0 <= points[-1][0]:
            return None
        points.append((v / 100.0, float(q)))
    return points


def q_pct_at(points: Sequence[tuple[float, float]], v_pu: float) -> float:
    """Reactive power (% of WMax) of a curve at ``v_pu``: linear between points, flat beyond."""
    if v_pu <= points[0][0]:
        return points[0][1]
    for (v0, q0), (v1, q1) in itertools.pairwise(points):
        if v_pu <= v1:
            return q0 + (q1 - q0) * (v_pu - v0) / (v1 - v0)
    return points[-1][1]


def volt_var_q_pct(model_id: int, values: Mapping[str, Value], v_pu: float) -> float | None:
    """The vars the curve asks for at ``v_pu`` (% of WMax), ``None`` while volt-var is off."""
    if model_id == 126:
        mod = values.get("ModEna")
        enabled = isinstance(mod, int) and mod & 1 == 1
    else:
        enabled = values.get("Ena") == 1
    if not enabled:
        return None
    points = curve_points(model_id, values)
    return None if points is None else q_pct_at(points, v_pu)


def accepts(model_id: int, candidate: Mapping[str, Value], written: set[str]) -> bool:
    """Whether the inverter takes a write of the points ``written`` that would leave the block
    as ``candidate``: enums within their range, no write to 705's read-only curve, enabling (or
    selecting) only a usable curve."""
    if model_id == 126:
        if candidate.get("curve[0].DeptRef") != _WMAX_REF[126]:
            return False
        if candidate.get("ActCrv") not in (0, 1):
            return False
        mod = candidate.get("ModEna")
        if not isinstance(mod, int) or mod & ~1:
            return False
        enabling = mod & 1 and written & {"ModEna", "ActCrv"}
        return not enabling or curve_points(126, candidate) is not None
    if candidate.get("Crv[0].ReadOnly") == 1 and any(n.startswith("Crv[0].") for n in written):
        return False  # the active curve is read-only: curves are changed by adoption
    if any(candidate.get(f"Crv[{c}].DeptRef") != _WMAX_REF[705] for c in range(N_CRV_705)):
        return False
    if candidate.get("Ena") not in (0, 1):
        return False
    request = candidate.get("AdptCrvReq")
    return isinstance(request, int) and 0 <= request <= N_CRV_705


def adopt(values: Mapping[str, Value]) -> dict[str, Value]:
    """After a write of 705's ``AdptCrvReq``: the updates that adopt the requested stored curve
    into the active one (COMPLETED), or only the FAILED result when it is not usable."""
    request = values.get("AdptCrvReq")
    if not isinstance(request, int) or not 2 <= request <= N_CRV_705:
        return {"AdptCrvRslt": _ADOPT_FAILED}
    src = f"Crv[{request - 1}]."
    names = [(f"{src}Pt[{i}].V", f"{src}Pt[{i}].Var") for i in range(N_PT)]
    if _points(705, values, src, names) is None:
        return {"AdptCrvRslt": _ADOPT_FAILED}
    updates: dict[str, Value] = {"AdptCrvRslt": _ADOPT_COMPLETED}
    for name in _705_CURVE_POINTS:
        updates[f"Crv[0].{name}"] = values.get(src + name)
    for i in range(N_PT):
        for pt in ("V", "Var"):
            updates[f"Crv[0].Pt[{i}].{pt}"] = values.get(f"{src}Pt[{i}].{pt}")
    return updates
