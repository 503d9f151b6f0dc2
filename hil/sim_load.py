"""A simulated controllable load behind a plain register map (not SunSpec).

Pure: no sockets; time comes from an injected ``monotonic``. The register image is the layout of
``devices/maps/controllable_load.toml`` (holding registers from address 0, float32 high word
first, kW):

====  ============  =====  ===========================================================
addr  point         rw     meaning
====  ============  =====  ===========================================================
0     p_kw          r      what the load draws now: ``min(demand, ceiling)``
2     p_limit_kw    rw     the ceiling; a finite number >= 0, else ILLEGAL_VALUE
4     revert_s      rw     watchdog seconds (0: none); restarted by every accepted write
5     limit_active  r      1 while the ceiling is in force
====  ============  =====  ===========================================================

The demand is the rig's (``update(demand_kw=...)``). Revert: when ``revert_s > 0`` and no
write came for that many seconds, the ceiling is lifted (``p_limit_kw`` back to the rating,
``limit_active = 0``) and the load draws its full demand again: it fails open.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable, Sequence
from typing import ClassVar

from hil.register_image import WriteRejection

__all__ = ["LOAD_MAP", "SimLoad"]

LOAD_MAP = "builtin:controllable_load"
"""The register map a config names for this device."""

_P, _LIMIT, _REVERT, _ACTIVE, _SIZE = 0, 2, 4, 5, 6
_WRITABLE = frozenset({_LIMIT, _LIMIT + 1, _REVERT})


def _float_words(value: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">f", value)))


class SimLoad:
    """A controllable load's register image and behaviour; see the module docstring."""

    kind: ClassVar[str] = "load"

    def __init__(
        self,
        name: str,
        bus: int,
        rating_kw: float,
        *,
        demand_kw: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rating_kw > 0:
            raise ValueError(f"{name}: rating_kw must be > 0, got {rating_kw}")
        self.name = name
        self.bus = bus
        self.rating_kw = rating_kw
        self.monotonic = monotonic
        self.on_write: Callable[[SimLoad, int], None] | None = None
        """Called after every accepted write (the rig re-solves its physics)."""
        self._demand_kw = rating_kw if demand_kw is None else max(demand_kw, 0.0)
        self._limit_kw = rating_kw
        self._active = False
        self._revert_s = 0
        self._written_at: float | None = None
        self.reverts = 0
        """How many times the watchdog lifted the ceiling."""
        self._image = [0] * _SIZE
        self._publish()

    # --- state -----------------------------------------------------------------------------

    @property
    def demand_kw(self) -> float:
        return self._demand_kw

    @property
    def limit_kw(self) -> float:
        return self._limit_kw

    @property
    def limit_active(self) -> bool:
        return self._active

    @property
    def p_kw(self) -> float:
        """What the load draws now."""
        return min(self._demand_kw, self._limit_kw) if self._active else self._demand_kw

    @property
    def shed_kw(self) -> float:
        return self._demand_kw - self.p_kw

    # --- the rig's side --------------------------------------------------------------------

    def update(self, *, demand_kw: float | None = None) -> None:
        """Advance to ``monotonic()``: apply a due revert, take a new demand."""
        self._check_revert(self.monotonic())
        if demand_kw is not None:
            self._demand_kw = max(demand_kw, 0.0)
        self._publish()

    def _check_revert(self, now: float) -> None:
        if (
            self._active
            and self._revert_s > 0
            and self._written_at is not None
            and now - self._written_at >= self._revert_s
        ):
            self._limit_kw, self._active, self._written_at = self.rating_kw, False, None
            self.reverts += 1

    # --- the image (what a Modbus server serves) -------------------------------------------

    @property
    def base_address(self) -> int:
        return 0

    def registers(self) -> list[int]:
        return list(self._image)

    def registers_at(self, address: int, count: int) -> list[int]:
        if count < 0 or address < 0 or address + count > _SIZE:
            raise IndexError(f"{self.name}: registers {address}..{address + count - 1} not mapped")
        return self._image[address : address + count]

    def check_write(self, address: int, values: Sequence[int]) -> WriteRejection | None:
        span = set(range(address, address + len(values)))
        if not values or not span <= _WRITABLE:
            return WriteRejection.ADDRESS
        if (_LIMIT in span) != (_LIMIT + 1 in span):  # half a float
            return WriteRejection.ADDRESS
        if _LIMIT in span:
            words = [int(v) & 0xFFFF for v in values[_LIMIT - address : _LIMIT - address + 2]]
            limit = struct.unpack(">f", struct.pack(">HH", *words))[0]
            if not math.isfinite(limit) or limit < 0:
                return WriteRejection.VALUE
        return None

    def apply_write(self, address: int, values: Sequence[int]) -> bool:
        if self.check_write(address, values) is not None:
            return False
        now = self.monotonic()
        self._check_revert(now)
        image = list(self._image)
        image[address : address + len(values)] = [int(v) & 0xFFFF for v in values]
        if _LIMIT in range(address, address + len(values)):
            self._limit_kw = struct.unpack(">f", struct.pack(">HH", *image[_LIMIT : _LIMIT + 2]))[0]
            self._active = True
        self._revert_s = image[_REVERT]
        self._written_at = now
        self._publish()
        if self.on_write is not None:
            self.on_write(self, address)
        return True

    def _publish(self) -> None:
        self._image[_P : _P + 2] = _float_words(self.p_kw)
        self._image[_LIMIT : _LIMIT + 2] = _float_words(self._limit_kw)
        self._image[_REVERT] = self._revert_s
        self._image[_ACTIVE] = 1 if self._active else 0
