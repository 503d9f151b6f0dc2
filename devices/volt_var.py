"""The volt-var fallback: a curve feederd writes once to an inverter's SunSpec 126 or 705 model.

While feederd runs it may set the inverter's reactive power itself (fixed vars, 123/704); when
the fixed mode reverts (feederd gone or silent), the inverter follows the curve written here, so
the feeder keeps some voltage support on its own. A fixed reactive mode, while enabled, wins over
the curve.

Curve points are ``(v_pu, q_pct)``: the terminal voltage in per unit of nominal and the reactive
power in % of WMax, positive when the inverter injects vars (over-excited, raising the voltage).

- Model 126 (legacy, "Static Volt-VAR Arrays"): its curves repeat to fill ``L`` (54 registers
  each, 20 fixed ``V``/``VAr`` pairs of which ``ActPt`` are in use; ``NPt`` says how many the
  device supports). feederd writes curve 1: ``ActPt``, ``DeptRef = 1`` (%WMax), ``V1..Vn`` in %
  of ``VRef`` (the 121 reference voltage, nominal on a commissioned site), ``VAr1..VArn`` in %
  of WMax, then ``ActCrv = 1``, ``ModEna`` bit 0 (enabled), ``WinTms = 0``, ``RvrtTms``,
  ``RmpTms = 0``.
- Model 705 (IEEE 1547-2018, "DER Volt-Var"): ``NCrv`` stored curves of ``NPt`` points; the
  first curve is read-only and shows the settings in force. feederd writes the first writable
  stored curve (``ActPt``, ``DeptRef = 0`` W_MAX_PCT, ``Pt[i].V`` in % of nominal voltage,
  ``Pt[i].Var`` in % of WMax), asks the device to adopt it (``AdptCrvReq`` = its 1-based index)
  and checks ``AdptCrvRslt`` and that the first curve now holds it, then writes ``RvrtTms`` and
  ``Ena = 1``. A device whose only curve is writable (``NCrv = 1``, ``ReadOnly = 0``) gets it
  written in place.

Every write touches only points the standard declares writable and is read back: a difference
is an ``UnsafeWriteError``. The scale factors are the device's own (``V_SF``, ``DeptRef_SF``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from devices.errors import DeviceProtocolError, PointNotImplemented, UnsafeWriteError
from devices.safety import check_read_back, check_writable
from devices.sunspec import (
    ModelLayout,
    PointDef,
    Value,
    decode_model,
    decode_point_raw,
    encode_point,
    layout,
)
from devices.sunspec_device import SunSpecDevice

__all__ = [
    "FALLBACK_REVERT_S",
    "IEEE1547_CATEGORY_B",
    "MAX_POINTS",
    "VOLT_VAR_MODELS",
    "VoltVarCurve",
    "VoltVarCurveError",
    "VoltVarUnsupported",
    "VoltVarWrite",
    "volt_var_model",
    "write_volt_var",
]

VOLT_VAR_MODELS = (126, 705)
"""The models that carry a volt-var curve, in the order feederd prefers them (126 goes with the
123 controls feederd prefers; 705 with 704)."""
MAX_POINTS = 20
"""Model 126 has room for 20 points per curve; no curve feederd writes has more."""
V_RANGE_PU = (0.5, 1.5)
FALLBACK_REVERT_S = 0
"""The revert time the driver writes with the curve: none. The curve is what the inverter does
when feederd is gone (a fixed reactive mode reverts *to* it), and it is written once per
discovery, so a timer would take it away while feederd still runs."""
_DEPT_REF_126_WMAX = 1
_DEPT_REF_705_W_MAX_PCT = 0
_READ_ONLY = 1
_ADOPT_COMPLETED, _ADOPT_FAILED = 1, 2
_ADOPT_READS = 3
"""How often the adoption result is read before feederd gives up (the next discovery retries)."""
_126_HEADER, _126_CURVE = 10, 54  # registers of the header (after ID and L) and of each curve


class VoltVarUnsupported(UnsafeWriteError):
    """The device cannot take the curve: no 126/705, fewer points than the curve has, no
    writable curve. Nothing was written."""


class VoltVarCurveError(ValueError):
    """A volt-var curve that cannot be written; ``point`` is its 1-based index, if one is at
    fault."""

    def __init__(self, message: str, *, point: int | None = None) -> None:
        super().__init__(message)
        self.point = point


@dataclass(frozen=True, slots=True, kw_only=True)
class VoltVarCurve:
    """2 to 20 points ``(v_pu, q_pct)``: voltage strictly increasing within 0.5..1.5 p.u.,
    reactive power within ±100 % of WMax (positive = injecting). The inverter holds the first
    point's vars below its voltage and the last point's above it, and interpolates between."""

    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        points = tuple((float(v), float(q)) for v, q in self.points)
        object.__setattr__(self, "points", points)
        if not 2 <= len(points) <= MAX_POINTS:
            raise VoltVarCurveError(
                f"volt-var curve has {len(points)} points, needs 2 to {MAX_POINTS}"
            )
        lo, hi = V_RANGE_PU
        for i, (v, q) in enumerate(points, start=1):
            where = f"volt-var curve point {i}"
            if not math.isfinite(v) or not math.isfinite(q):
                raise VoltVarCurveError(f"{where}: ({v}, {q}) is not a pair of numbers", point=i)
            if not lo <= v <= hi:
                raise VoltVarCurveError(f"{where}: v_pu = {v} is outside {lo}..{hi} p.u.", point=i)
            if abs(q) > 100.0:
                raise VoltVarCurveError(
                    f"{where}: q_pct = {q} is outside -100..100 % of WMax", point=i
                )
            if i > 1 and v <= points[i - 2][0]:
                raise VoltVarCurveError(
                    f"{where}: v_pu = {v} is not above point {i - 1}'s {points[i - 2][0]}"
                    " (voltages must increase)",
                    point=i,
                )

    @property
    def v_pu(self) -> tuple[float, ...]:
        return tuple(v for v, _ in self.points)

    @property
    def q_pct(self) -> tuple[float, ...]:
        return tuple(q for _, q in self.points)


IEEE1547_CATEGORY_B = VoltVarCurve(
    points=((0.92, 44.0), (0.98, 0.0), (1.02, 0.0), (1.08, -44.0)),
)
"""The default volt-var characteristic of IEEE Std 1547-2018 for category B DER (its Table 8,
repeated as characteristic 1 in IEEE Std 1547.1-2020 Table 25): VRef = VN, V1 = 0.92 VN with
Q1 = 44 % of the nameplate apparent power injected, V2 = 0.98 VN and V3 = 1.02 VN with no vars,
V4 = 1.08 VN with Q4 = 44 % absorbed (open-loop response time 5 s, the device's own setting).
The standard counts vars in % of the kVA rating; feederd writes them in % of WMax (126
``DeptRef`` %WMax, 705 W_MAX_PCT), the same on an inverter whose kVA rating equals its kW one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VoltVarWrite:
    """What ``write_volt_var`` wrote: the model, the 1-based index of the curve written (705:
    the stored curve that was adopted), the number of points and the revert time."""

    device: str
    model_id: int
    curve_index: int
    points: int
    revert_s: int


def volt_var_model(model_ids: Sequence[int]) -> int | None:
    """The volt-var model feederd would write among a chain's model ids (``None``: neither)."""
    return next((m for m in VOLT_VAR_MODELS if m in model_ids), None)


async def write_volt_var(
    device: SunSpecDevice, curve: VoltVarCurve, *, revert_s: int
) -> VoltVarWrite:
    """Write ``curve`` as the device's active volt-var curve (126 or 705, see the module
    docstring) and enable it; every write read back.

    ``revert_s`` is the curve's revert time (126/705 ``RvrtTms``): 0 keeps the curve in force
    until it is changed (``FALLBACK_REVERT_S``, what a fallback for when feederd is gone
    needs). Raises ``VoltVarUnsupported`` (no 126/705, more points than ``NPt``, no writable
    curve: nothing written), ``UnsafeWriteError`` (a read-back that differs, a refused
    adoption, a value that does not fit its point), ``DeviceProtocolError`` (a block whose
    length does not match its counts, a count not implemented) or the link's errors.
    """
    if not 0 <= revert_s <= 0xFFFF:
        raise UnsafeWriteError(device.name, f"volt-var revert time {revert_s} s outside 0..65535")
    chain = device.chain if device.chain is not None else await device.discover()
    model_id = volt_var_model(chain.ids)
    if model_id is None:
        raise VoltVarUnsupported(
            device.name, f"no volt-var model (126 or 705) in the chain {list(chain.ids)}"
        )
    where = chain.find(model_id)
    assert where is not None  # found above
    start, length = where
    registers = await device.read_span(start, length + 2)
    if model_id == 126:
        return await _write_126(device, curve, start, registers, revert_s=revert_s)
    return await _write_705(device, curve, start, registers, revert_s=revert_s)


# --- model 126 ---------------------------------------------------------------------------


def layout_126(device: str, length: int) -> ModelLayout:
    """Model 126 laid out for a block of ``L = length``: 10 header registers, 54 per curve."""
    curves, extra = divmod(length - _126_HEADER, _126_CURVE)
    if curves < 1 or extra:
        raise DeviceProtocolError(
            device, f"model 126 has L = {length}, not 10 + 54 × curves: no curve to write"
        )
    return layout(126, repeats={"curve": curves})


async def _write_126(
    device: SunSpecDevice,
    curve: VoltVarCurve,
    start: int,
    registers: list[int],
    *,
    revert_s: int,
) -> VoltVarWrite:
    model = layout_126(device.name, registers[1])
    values = _decode(device.name, model, registers, start)
    n_pt = _count(device.name, values, "NPt", 126)
    _fits(device.name, curve, min(n_pt, MAX_POINTS), 126)
    if values.get("curve[0].ReadOnly") == _READ_ONLY:
        raise VoltVarUnsupported(device.name, "model 126 curve 1 is read-only: no curve written")
    v_sf = _sf(device.name, model, registers, "V_SF")
    q_sf = _sf(device.name, model, registers, "DeptRef_SF")
    words = [len(curve.points), _DEPT_REF_126_WMAX]
    for i, (v, q) in enumerate(curve.points, start=1):
        words += _encode(device.name, model.point(f"curve[0].V{i}"), 100.0 * v, v_sf)
        words += _encode(device.name, model.point(f"curve[0].VAr{i}"), q, q_sf)
    await _write(device, model, start, "curve[0].ActPt", words)
    header = [1, 1, 0, revert_s, 0]  # ActCrv 1, ModEna enabled, WinTms, RvrtTms, RmpTms
    await _write(device, model, start, "ActCrv", header)
    return VoltVarWrite(
        device=device.name, model_id=126, curve_index=1, points=len(curve.points), revert_s=revert_s
    )


# --- model 705 ---------------------------------------------------------------------------


def layout_705(device: str, registers: Sequence[int]) -> ModelLayout:
    """Model 705 laid out with the ``NCrv`` and ``NPt`` its block declares (and checked
    against its ``L``)."""
    fixed = layout(705)
    n_crv = decode_point_raw(registers, fixed.point("NCrv"))
    n_pt = decode_point_raw(registers, fixed.point("NPt"))
    if not isinstance(n_crv, int) or not isinstance(n_pt, int) or n_crv < 1 or n_pt < 1:
        raise DeviceProtocolError(
            device, f"model 705 declares NCrv = {n_crv}, NPt = {n_pt}: no curve to write"
        )
    model = layout(705, repeats={"Crv": n_crv, "Crv.Pt": n_pt})
    if model.length != registers[1]:
        raise DeviceProtocolError(
            device,
            f"model 705 has L = {registers[1]}, but NCrv = {n_crv} and NPt = {n_pt}"
            f" make {model.length}",
        )
    return model


async def _write_705(
    device: SunSpecDevice,
    curve: VoltVarCurve,
    start: int,
    registers: list[int],
    *,
    revert_s: int,
) -> VoltVarWrite:
    model = layout_705(device.name, registers)
    values = _decode(device.name, model, registers, start)
    n_crv, n_pt = _count(device.name, values, "NCrv", 705), _count(device.name, values, "NPt", 705)
    _fits(device.name, curve, n_pt, 705)
    writable = [i for i in range(1, n_crv) if values.get(f"Crv[{i}].ReadOnly") != _READ_ONLY]
    if writable:
        index = writable[0]
    elif n_crv == 1 and values.get("Crv[0].ReadOnly") != _READ_ONLY:
        index = 0
    else:
        raise VoltVarUnsupported(
            device.name, f"model 705 has no writable stored curve (NCrv = {n_crv}): none written"
        )
    v_sf = _sf(device.name, model, registers, "V_SF")
    q_sf = _sf(device.name, model, registers, "DeptRef_SF")
    crv = f"Crv[{index}]"
    head = [len(curve.points), _DEPT_REF_705_W_MAX_PCT]  # ActPt, DeptRef
    pts: list[int] = []
    for i, (v, q) in enumerate(curve.points):
        pts += _encode(device.name, model.point(f"{crv}.Pt[{i}].V"), 100.0 * v, v_sf)
        pts += _encode(device.name, model.point(f"{crv}.Pt[{i}].Var"), q, q_sf)
    await _write(device, model, start, f"{crv}.ActPt", head)
    await _write(device, model, start, f"{crv}.Pt[0].V", pts)
    if index > 0:
        await _adopt(device, model, start, index, head, pts)
    await _write(device, model, start, "RvrtTms", [(revert_s >> 16) & 0xFFFF, revert_s & 0xFFFF])
    await _write(device, model, start, "Ena", [1])
    return VoltVarWrite(
        device=device.name,
        model_id=705,
        curve_index=index + 1,
        points=len(curve.points),
        revert_s=revert_s,
    )


async def _adopt(
    device: SunSpecDevice,
    model: ModelLayout,
    start: int,
    index: int,
    head: list[int],
    pts: list[int],
) -> None:
    """Ask the device to adopt stored curve ``index`` (0-based) and check that the first
    (active) curve now holds it."""
    request = model.point("AdptCrvReq")
    await device.link.write_holding(device.name, start + request.offset, [index + 1], device.unit)
    result = model.point("AdptCrvRslt")
    active_head = model.point("Crv[0].ActPt").offset
    active_pts = model.point("Crv[0].Pt[0].V").offset
    outcome: int | float | str | None = None
    held_head: list[int] = []
    held_pts: list[int] = []
    for _ in range(_ADOPT_READS):
        block = await device.read_span(start, model.length + 2)
        outcome = decode_point_raw(block, result)
        if outcome == _ADOPT_FAILED:
            raise UnsafeWriteError(
                device.name, f"model 705 refused curve {index + 1} (AdptCrvRslt FAILED)"
            )
        held_head = block[active_head : active_head + len(head)]
        held_pts = block[active_pts : active_pts + len(pts)]
        if outcome == _ADOPT_COMPLETED and held_head == head and held_pts == pts:
            return
    raise UnsafeWriteError(
        device.name,
        f"model 705 did not adopt curve {index + 1}: AdptCrvRslt = {outcome} and the active"
        f" curve holds {held_head + held_pts},"
        f" wrote {head + pts}",
    )


# --- shared ------------------------------------------------------------------------------


def _decode(device: str, model: ModelLayout, registers: list[int], start: int) -> dict[str, Value]:
    try:
        return decode_model(model, registers)
    except ValueError as err:
        raise DeviceProtocolError(device, str(err), address=start) from err


def _count(device: str, values: dict[str, Value], point: str, model_id: int) -> int:
    value = values.get(point)
    if not isinstance(value, int) or value < 1:
        raise PointNotImplemented(device, f"{model_id} {point}")
    return value


def _fits(device: str, curve: VoltVarCurve, n_pt: int, model_id: int) -> None:
    if len(curve.points) > n_pt:
        raise VoltVarUnsupported(
            device,
            f"volt-var curve has {len(curve.points)} points; model {model_id} of this device"
            f" takes at most {n_pt} (NPt): none written",
        )


def _sf(device: str, model: ModelLayout, registers: list[int], name: str) -> int:
    sf = decode_point_raw(registers, model.point(name))
    if not isinstance(sf, int) or not -10 <= sf <= 10:
        raise PointNotImplemented(device, f"{model.model_id} {name}")
    return sf


def _encode(device: str, pt: PointDef, value: float, sf: int) -> list[int]:
    try:
        return encode_point(pt, value, sf)
    except ValueError as err:
        raise UnsafeWriteError(device, f"volt-var {err}") from err


async def _write(
    device: SunSpecDevice, model: ModelLayout, start: int, first: str, words: list[int]
) -> None:
    """Write ``words`` from point ``first`` (only writable points), then read them back."""
    pt = model.point(first)
    if pt.offset + len(words) > model.length + 2:
        raise UnsafeWriteError(
            device.name, f"write of {len(words)} words at {first} runs past model {model.model_id}"
        )
    covered = [p for p in model.points.values() if pt.offset <= p.offset < pt.offset + len(words)]
    check_writable(
        device.name, f"model {model.model_id}", [p.name for p in covered if not p.writable]
    )
    address = start + pt.offset
    await device.link.write_holding(device.name, address, words, device.unit)
    held = await device.link.read_holding(device.name, address, len(words), device.unit)
    check_read_back(device.name, address, words, held)
