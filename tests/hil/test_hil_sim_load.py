"""The simulated controllable load: register semantics, its watchdog, and the rig's physics."""

from __future__ import annotations

import math
import struct

import pytest

from controller.clock import FakeClock
from hil import HilRig, SimLoad, WriteRejection


def _clock(start_s: float) -> FakeClock:
    """A fake monotonic clock that starts at ``start_s``."""
    clock = FakeClock()
    clock.advance(start_s)
    return clock


def _f(value: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">f", value)))


def test_the_ceiling_holds_until_the_watchdog_lapses() -> None:
    clock = _clock(0.0)
    load = SimLoad("ld", 5, 100.0, demand_kw=80.0, monotonic=clock.monotonic)
    assert load.p_kw == 80.0
    assert not load.limit_active
    assert load.apply_write(4, [10])  # the watchdog first, as the driver does
    assert load.apply_write(2, _f(30.0))
    assert (load.p_kw, load.shed_kw, load.limit_active) == (30.0, 50.0, True)
    assert load.registers_at(0, 6) == [*_f(30.0), *_f(30.0), 10, 1]
    clock.advance(9.0)
    assert load.apply_write(2, _f(40.0))  # a rewrite restarts the watchdog
    clock.advance(9.0)
    load.update()
    assert load.p_kw == 40.0
    clock.advance(1.5)
    load.update()
    assert (load.p_kw, load.limit_active, load.limit_kw, load.reverts) == (80.0, False, 100.0, 1)


def test_without_a_watchdog_the_ceiling_stays() -> None:
    clock = _clock(0.0)
    load = SimLoad("ld", 5, 100.0, monotonic=clock.monotonic)
    assert load.apply_write(2, _f(10.0))
    clock.advance(3600.0)
    load.update()
    assert load.p_kw == 10.0


@pytest.mark.parametrize(
    ("address", "words", "why"),
    [
        (0, _f(5.0), WriteRejection.ADDRESS),  # p_kw is read-only
        (5, [0], WriteRejection.ADDRESS),  # limit_active is read-only
        (3, [0, 10], WriteRejection.ADDRESS),  # half of the ceiling's float
        (2, _f(math.nan), WriteRejection.VALUE),
        (2, _f(-1.0), WriteRejection.VALUE),
    ],
)
def test_bad_writes_are_refused_and_change_nothing(
    address: int, words: list[int], why: WriteRejection
) -> None:
    load = SimLoad("ld", 5, 100.0, demand_kw=80.0)
    before = load.registers()
    assert load.check_write(address, words) is why
    assert not load.apply_write(address, words)
    assert load.registers() == before


async def test_a_shed_load_lowers_the_head_import_in_the_physics() -> None:
    clock = _clock(0.0)
    async with HilRig(
        monotonic=clock.monotonic,
        pv_buses=(),
        battery_buses=(),
        load_buses=(18,),
        load_kw=300.0,
        physics_period_s=None,
    ) as rig:
        before = (await rig.step()).head_p_kw
        record = rig.device("load18")
        assert (record.kind, record.register_map) == ("load", "builtin:controllable_load")
        assert rig.state.load_kw == pytest.approx(rig.physics.base_load_kw + 300.0)
        rig.loads["load18"].apply_write(2, _f(100.0))
        after = (await rig.settle()).head_p_kw
        # 200 kW less at the far end of the feeder: more than that at the head (losses)
        assert 200.0 < before - after < 260.0
