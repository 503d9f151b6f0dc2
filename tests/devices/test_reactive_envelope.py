"""The reactive-power rule of the safety envelope (``devices.safety.reactive_command``).

A reactive setpoint is refused when not finite, clamped to ``±min(var_max, sqrt(S² - p²), WMax)``
around the active-power ceiling written with it, expressed in % of WMax in the scale factor's
steps (never rounded outside the clamp) and carries a revert timeout.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.errors import UnsafeWriteError
from devices.safety import reactive_command

RATED: dict[str, Any] = {
    "w_max_kw": 100.0,
    "s_max_kva": 110.0,
    "var_max_kvar": 60.0,
    "revert_s": 60,
}


@pytest.mark.parametrize("hostile", [math.nan, math.inf, -math.inf])
def test_a_non_finite_reactive_setpoint_is_refused(hostile: float) -> None:
    with pytest.raises(UnsafeWriteError, match="not a finite number"):
        reactive_command("pv1", hostile, p_ceiling_kw=50.0, **RATED)


def test_inside_the_capability_it_is_written_as_asked() -> None:
    cmd = reactive_command("pv1", -25.0, p_ceiling_kw=50.0, **RATED)
    assert (cmd.pct, cmd.q_kvar, cmd.clamped, cmd.revert_s) == (-25.0, -25.0, False, 60)


def test_the_kva_circle_around_the_ceiling_clamps_it() -> None:
    # S = 110 kVA, ceiling 100 kW: sqrt(110² - 100²) = 45.83 kvar, in 0.1 % of 100 kW steps
    # rounded towards zero: 45.8 %
    cmd = reactive_command("pv1", 55.0, p_ceiling_kw=100.0, **RATED)
    assert cmd.clamped
    assert cmd.pct == 45.8
    assert cmd.q_kvar == pytest.approx(45.8)
    assert cmd.q_kvar**2 + 100.0**2 <= 110.0**2
    absorbing = reactive_command("pv1", -55.0, p_ceiling_kw=100.0, **RATED)
    assert absorbing.pct == -45.8


def test_the_declared_capability_clamps_it() -> None:
    cmd = reactive_command("pv1", -1e6, p_ceiling_kw=10.0, **RATED)
    assert (cmd.pct, cmd.clamped) == (-60.0, True)


def test_no_vars_are_left_when_the_ceiling_takes_the_whole_rating() -> None:
    cmd = reactive_command("pv1", 30.0, p_ceiling_kw=110.0, **RATED)
    assert (cmd.pct, cmd.q_kvar, cmd.clamped) == (0.0, 0.0, True)


def test_an_int16_at_a_fine_scale_factor_bounds_the_percentage() -> None:
    # at 10^-3 steps an int16 carries ±32.767 %: never a value the point cannot hold
    cmd = reactive_command("pv1", 50.0, p_ceiling_kw=0.0, pct_sf=-3, **RATED)
    assert cmd.pct == 32.767


@pytest.mark.parametrize("revert_s", [0, -1, 65535])
def test_a_revert_outside_its_range_is_refused(revert_s: int) -> None:
    with pytest.raises(UnsafeWriteError, match="revert timeout"):
        reactive_command("pv1", 10.0, p_ceiling_kw=50.0, **{**RATED, "revert_s": revert_s})


@pytest.mark.parametrize(
    ("field", "value"),
    [("w_max_kw", 0.0), ("s_max_kva", math.nan), ("var_max_kvar", -1.0), ("p_ceiling_kw", -5.0)],
)
def test_a_rating_that_cannot_be_right_is_refused(field: str, value: float) -> None:
    kwargs: dict[str, Any] = {**RATED, "p_ceiling_kw": 50.0, field: value}
    with pytest.raises(UnsafeWriteError, match="nothing written"):
        reactive_command("pv1", 10.0, **kwargs)


@given(
    q=st.floats(-1e6, 1e6),
    w_max=st.floats(1.0, 5000.0),
    s_ratio=st.floats(0.5, 1.5),
    var_ratio=st.floats(0.0, 1.5),
    p_ratio=st.floats(0.0, 1.5),
    sf=st.integers(-3, 0),
)
def test_whatever_is_asked_the_written_vars_stay_inside_every_limit(
    q: float, w_max: float, s_ratio: float, var_ratio: float, p_ratio: float, sf: int
) -> None:
    s_max, p = w_max * s_ratio, w_max * p_ratio
    cmd = reactive_command(
        "pv1",
        q,
        w_max_kw=w_max,
        s_max_kva=s_max,
        var_max_kvar=w_max * var_ratio,
        p_ceiling_kw=p,
        revert_s=30,
        pct_sf=sf,
    )
    limit = min(w_max * var_ratio, math.sqrt(max(s_max**2 - p**2, 0.0)), w_max)
    assert abs(cmd.q_kvar) <= limit * (1 + 1e-9) + 1e-9
    assert abs(cmd.pct) <= 100.0
    assert abs(round(cmd.pct / 10.0**sf) - cmd.pct / 10.0**sf) < 1e-6  # whole steps
    assert cmd.q_kvar == pytest.approx(cmd.pct * w_max / 100.0)
    assert cmd.q_kvar * q >= 0.0  # never the other way round
    # one step from what was asked unless clamped
    if not cmd.clamped:
        assert abs(cmd.q_kvar - q) <= 10.0**sf * w_max / 100.0 + 1e-9
