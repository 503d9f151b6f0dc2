"""The write safety envelope (DESIGN.md §4): each rule, including a hostile dispatch."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.errors import UnsafeWriteError
from devices.safety import MIN_LIMIT_PCT, Ramp, battery_command, pv_command


def _ramp(kw_per_write: float | None) -> Ramp | None:
    """A ramp of ``kw_per_write`` between writes one second apart."""
    return None if kw_per_write is None else Ramp(kw_per_s=kw_per_write, interval_s=1.0)


@pytest.mark.parametrize("hostile", [math.nan, math.inf, -math.inf])
def test_non_finite_setpoints_are_refused(hostile: float) -> None:
    with pytest.raises(UnsafeWriteError, match="not a finite number"):
        pv_command("pv1", hostile, w_max_kw=100.0, revert_s=60)
    with pytest.raises(UnsafeWriteError, match="not a finite number"):
        battery_command("b1", hostile, p_max_kw=100.0, revert_s=60)


def test_pv_limit_is_clamped_to_rating_and_never_zero() -> None:
    over = pv_command("pv1", 1e9, w_max_kw=150.0, revert_s=60)
    assert over.limit_pct == 100.0
    assert over.clamped
    negative = pv_command("pv1", -50.0, w_max_kw=150.0, revert_s=60)
    assert negative.limit_pct == MIN_LIMIT_PCT > 0
    zero = pv_command("pv1", 0.0, w_max_kw=150.0, revert_s=60)
    assert zero.limit_pct > 0


def test_ramp_limit_against_last_setpoint() -> None:
    cmd = pv_command("pv1", 10.0, w_max_kw=150.0, revert_s=60, last_kw=150.0, ramp=_ramp(20.0))
    # 130 kW is not a whole 0.1% of 150 kW: the nearest step inside the ramp window
    assert 130.0 <= cmd.p_max_kw <= 130.15
    bat = battery_command(
        "b1", 250.0, p_max_kw=250.0, revert_s=60, last_kw=-100.0, ramp=_ramp(50.0)
    )
    assert bat.p_kw == pytest.approx(-50.0)


def test_every_control_carries_a_revert_timeout() -> None:
    assert pv_command("pv1", 50.0, w_max_kw=150.0, revert_s=60).revert_s == 60
    with pytest.raises(UnsafeWriteError, match="revert timeout"):
        pv_command("pv1", 50.0, w_max_kw=150.0, revert_s=0)
    with pytest.raises(UnsafeWriteError, match="revert timeout"):
        battery_command("b1", 50.0, p_max_kw=150.0, revert_s=70000)


@given(
    p=st.floats(allow_nan=True, allow_infinity=True),
    rating=st.floats(min_value=0.1, max_value=10_000),
    last=st.none() | st.floats(min_value=-10_000, max_value=10_000),
    ramp=st.none() | st.floats(min_value=0.0, max_value=10_000, exclude_min=True),
)
def test_no_written_value_leaves_the_rating(
    p: float, rating: float, last: float | None, ramp: float | None
) -> None:
    try:
        pv = pv_command("pv", p, w_max_kw=rating, revert_s=60, last_kw=last, ramp=_ramp(ramp))
        bat = battery_command("b", p, p_max_kw=rating, revert_s=60, last_kw=last, ramp=_ramp(ramp))
    except UnsafeWriteError:
        assert not math.isfinite(p)
        return
    assert MIN_LIMIT_PCT <= pv.limit_pct <= 100.0
    assert 0.0 < pv.p_max_kw <= rating * (1 + 1e-9)
    assert -100.0 <= bat.rate_pct <= 100.0
    assert abs(bat.p_kw) <= rating * (1 + 1e-9)


def test_a_ramp_is_a_rate_over_the_interval_and_refuses_nonsense() -> None:
    assert Ramp(kw_per_s=2.0, interval_s=5.0).step_kw == pytest.approx(10.0)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="kw_per_s"):
            Ramp(kw_per_s=bad, interval_s=5.0)
        with pytest.raises(ValueError, match="interval_s"):
            Ramp(kw_per_s=1.0, interval_s=bad)
