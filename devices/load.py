"""A controllable load read and driven through a register map (``kind = "load"``).

The map (see ``devices/maps/controllable_load.toml``) must have these points:

``p_kw``
    what the load draws now, kW (positive = consumed); read every interval.
``p_limit_kw`` (writable)
    the ceiling the load may draw, kW: the setpoint feederd writes.
``revert_s`` (writable)
    the device's watchdog: seconds after the last write of the controls at which the device
    drops the ceiling on its own and returns to its unconstrained demand (it fails open, like
    SunSpec model 123). feederd writes it with every setpoint (the config's ``revert_s``), so a
    dead daemon never leaves a load shed; a map without it is refused, because a load that
    cannot revert on its own breaks the revert rule of DESIGN.md §4.

and may have ``limit_active`` (1 while the ceiling is in force). Each write goes through the
safety envelope (``load_command``: finite, clamped to ``[min_kw, rating_kw]`` and the ramp
limit), touches only points the map declares writable, writes ``revert_s`` before the ceiling
(so the watchdog is armed before the ceiling takes effect) and reads both back.
"""

from __future__ import annotations

import math
import struct

from devices.errors import BadReading, ImplausibleReading, UnsafeWriteError
from devices.modbus_link import ModbusLink
from devices.protocol import Capabilities
from devices.records import DeviceKind, LoadReading, LoadSetpoint, Setpoint, WriteResult
from devices.register_map import (
    MapPoint,
    RegisterMap,
    RegisterMapError,
    encode_value,
    plan_reads,
    read_map,
)
from devices.safety import Ramp, check_read_back, check_writable, load_command

__all__ = [
    "LIMIT_POINT",
    "POWER_POINT",
    "REVERT_POINT",
    "RegisterMapLoad",
    "check_load_map",
]

POWER_POINT = "p_kw"
LIMIT_POINT = "p_limit_kw"
REVERT_POINT = "revert_s"
ACTIVE_POINT = "limit_active"
PLAUSIBLE_OVER_RATING = 1.5
"""A load drawing more than this multiple of its rating is taken as a bad reading."""


def check_load_map(rmap: RegisterMap) -> None:
    """A load map has a readable ``p_kw`` and writable ``p_limit_kw`` and ``revert_s``."""
    points = rmap.points
    if POWER_POINT not in points:
        raise RegisterMapError(f"{rmap.name}: a load map needs a point named {POWER_POINT!r}")
    for name, what in ((LIMIT_POINT, "setpoint"), (REVERT_POINT, "revert timer")):
        pt = points.get(name)
        if pt is None:
            raise RegisterMapError(
                f"{rmap.name}: a load map needs a writable {what} point named {name!r}"
            )
        if not pt.writable:
            raise RegisterMapError(
                f"{rmap.name}: point {name!r} ({what}) must be declared writable = true"
            )


class RegisterMapLoad:
    """A controllable load on Modbus through a register map; see the module docstring."""

    kind = DeviceKind.LOAD
    capabilities = Capabilities(writable=True, releasable=True)

    def __init__(
        self,
        name: str,
        link: ModbusLink,
        unit: int,
        rmap: RegisterMap,
        *,
        rating_kw: float,
        min_kw: float,
        revert_s: int,
        ramp: Ramp | None = None,
    ) -> None:
        check_load_map(rmap)
        self.name = name
        self.link = link
        self.unit = unit
        self.map = rmap
        self.rating_kw = rating_kw
        self.min_kw = min_kw
        self.revert_s = revert_s
        self.ramp = ramp
        self._reads = plan_reads(rmap)
        self._last_written_kw: float | None = None
        self._last_p_kw: float | None = None

    async def read(self) -> LoadReading:
        values, dropped = await read_map(self.link, self.name, self.unit, self.map, self._reads)
        p_kw = values.get(POWER_POINT)
        if p_kw is None:
            raise BadReading(
                self.name,
                f"point {POWER_POINT} is implausible or not a number; reading dropped",
                point=POWER_POINT,
            )
        low, top = -0.05 * self.rating_kw, PLAUSIBLE_OVER_RATING * self.rating_kw
        if not low <= p_kw <= top:
            raise ImplausibleReading(
                self.name, point=POWER_POINT, value=p_kw, low=low, high=top, unit="kW"
            )
        active = values.get(ACTIVE_POINT)
        self._last_p_kw = max(p_kw, 0.0)
        return LoadReading(
            device=self.name,
            p_kw=max(p_kw, 0.0),
            rating_kw=self.rating_kw,
            min_kw=self.min_kw,
            limit_kw=values.get(LIMIT_POINT),
            limit_active=None if active is None else active != 0,
            dropped=tuple(p for p in dropped if p in (LIMIT_POINT, ACTIVE_POINT)),
        )

    async def write(self, setpoint: Setpoint) -> WriteResult:
        """Arm the watchdog, write the ceiling, and read both back.

        The ramp limit is taken around what the load really does: the lower of the last
        ceiling written and the last draw read (a ceiling far above the draw changes nothing,
        and a shed load is restored no faster than the ramp)."""
        if not isinstance(setpoint, LoadSetpoint):
            raise UnsafeWriteError(self.name, f"a load takes no {type(setpoint).__name__}")
        refs = [v for v in (self._last_written_kw, self._last_p_kw) if v is not None]
        cmd = load_command(
            self.name,
            setpoint.p_max_kw,
            min_kw=self.min_kw,
            rating_kw=self.rating_kw,
            revert_s=self.revert_s,
            last_kw=min(refs) if refs else None,
            ramp=self.ramp,
        )
        await self._write_point(self.map.points[REVERT_POINT], float(cmd.revert_s))
        await self._write_point(self.map.points[LIMIT_POINT], cmd.p_max_kw)
        self._last_written_kw = cmd.p_max_kw
        return WriteResult(
            device=self.name,
            requested=setpoint.p_max_kw,
            written=cmd.p_max_kw,
            clamped=cmd.clamped,
        )

    async def release(self) -> None:
        """Lift the ceiling (``on_stop = "release"``): the load may draw its full rating."""
        await self._write_point(self.map.points[LIMIT_POINT], self.rating_kw)
        self._last_written_kw = self.rating_kw

    async def _write_point(self, pt: MapPoint, value: float) -> None:
        check_writable(self.name, f"register map {self.map.name}", [] if pt.writable else [pt.name])
        if not math.isfinite(value):  # the envelope never passes one; a second guard is cheap
            raise UnsafeWriteError(self.name, f"{pt.name} = {value!r} is not a finite number")
        if (pt.min is not None and value < pt.min) or (pt.max is not None and value > pt.max):
            raise UnsafeWriteError(
                self.name,
                f"{pt.name} = {value:g} is outside the map's bounds "
                f"{pt.min if pt.min is not None else '-inf'}..{pt.max if pt.max is not None else 'inf'}"
                "; nothing written",
            )
        try:
            words = encode_value(pt, value)
        except (struct.error, OverflowError) as err:
            raise UnsafeWriteError(
                self.name, f"{pt.name} = {value} does not fit {pt.type}"
            ) from err
        await self.link.write_holding(self.name, pt.address, words, self.unit)
        held = await self.link.read_holding(self.name, pt.address, pt.size, self.unit)
        check_read_back(self.name, pt.address, words, held)

    async def close(self) -> None:
        """Nothing of its own to close: the link is the fleet's."""
