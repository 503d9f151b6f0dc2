"""``HealthTracker`` on its own: every transition, on a fake monotonic clock.

A transition is returned once, when the state changes; the same state again returns ``None``,
so whoever logs transitions never repeats a line however long a state lasts.
"""

from __future__ import annotations

import pytest

from controller.clock import FakeClock
from devices import DeviceState, HealthTracker, Transition

DOWN, UP, DEGRADED, STALE = (
    DeviceState.DOWN,
    DeviceState.UP,
    DeviceState.DEGRADED,
    DeviceState.STALE,
)


@pytest.fixture
def clock() -> FakeClock:
    clock = FakeClock()
    clock.advance(1000.0)
    return clock


def test_a_device_that_never_answered_is_down_until_given_up(clock: FakeClock) -> None:
    h = HealthTracker(monotonic=clock.monotonic, stale_after=3)
    assert (h.state, h.failures, h.errors, h.bad_readings) == (DOWN, 0, 0, 0)
    assert not h.stale
    assert h.age_s() is None
    assert h.record_failure("connection refused") is None  # still down: nothing to say
    assert h.record_failure("connection refused") is None
    assert h.state is DOWN
    assert h.record_failure("connection refused") == Transition(
        old=DOWN, new=STALE, failures=3, reason="connection refused"
    )
    assert h.stale
    assert h.age_s() is None  # never a good reading
    clock.advance(60.0)
    assert h.record_good() == Transition(old=STALE, new=UP, failures=3, reason=None)
    assert h.age_s() == 0.0
    assert (h.failures, h.errors, h.last_error) == (0, 3, "connection refused")


def test_an_outage_is_one_transition_down_and_one_back_however_long(clock: FakeClock) -> None:
    h = HealthTracker(monotonic=clock.monotonic, stale_after=3)
    changes = [h.record_good()]
    for _ in range(10):
        clock.advance(5.0)
        changes.append(h.record_failure("timeout"))
    clock.advance(5.0)
    changes.append(h.record_good())
    assert [(c.old, c.new) if c else None for c in changes] == [
        (DOWN, UP),
        (UP, DEGRADED),
        None,
        (DEGRADED, STALE),
        *[None] * 7,  # stale for seven more polls: nothing repeated
        (STALE, UP),
    ]
    recovered = changes[-1]
    assert recovered is not None
    assert recovered.failures == 10  # how many polls it missed
    assert h.errors == 10
    assert h.age_s() == 0.0


def test_the_age_is_the_time_since_the_last_good_reading(clock: FakeClock) -> None:
    h = HealthTracker(monotonic=clock.monotonic, stale_after=2)
    h.record_good()
    clock.advance(5.0)
    h.record_failure("timeout")
    clock.advance(5.0)
    h.record_failure("timeout")
    assert h.age_s() == pytest.approx(10.0)
    clock.advance(2.5)
    assert h.age_s() == pytest.approx(12.5)  # read when asked, from the clock


def test_dropped_values_make_a_device_degraded_not_down(clock: FakeClock) -> None:
    h = HealthTracker(monotonic=clock.monotonic, stale_after=3)
    h.record_good()
    change = h.record_good(dropped=2)
    assert change is not None
    assert (change.old, change.new, change.failures) == (UP, DEGRADED, 0)
    assert change.reason == "2 value(s) dropped as unusable"
    assert h.record_good(dropped=1) is None  # still degraded
    assert h.bad_readings == 3
    assert h.errors == 0  # it answered every time
    assert h.age_s() == 0.0  # and the readings were used
    # a first contact with a dropped value is degraded straight away
    fresh = HealthTracker(monotonic=clock.monotonic)
    first = fresh.record_good(dropped=1)
    assert first is not None
    assert (first.old, first.new) == (DOWN, DEGRADED)
    assert fresh.record_good() == Transition(old=DEGRADED, new=UP, failures=0, reason=None)


def test_a_degraded_device_that_stops_answering_goes_stale_without_a_repeat(
    clock: FakeClock,
) -> None:
    h = HealthTracker(monotonic=clock.monotonic, stale_after=2)
    h.record_good(dropped=1)
    assert h.record_failure("timeout") is None  # degraded already
    change = h.record_failure("timeout")
    assert change == Transition(old=DEGRADED, new=STALE, failures=2, reason="timeout")


def test_unusable_answers_count_as_bad_readings_and_failures(clock: FakeClock) -> None:
    h = HealthTracker(monotonic=clock.monotonic, stale_after=3)
    h.record_good()
    change = h.record_failure("implausible W = 1e9 kW", bad_reading=True)
    assert change == Transition(old=UP, new=DEGRADED, failures=1, reason="implausible W = 1e9 kW")
    h.record_failure("timeout")
    assert (h.bad_readings, h.errors, h.failures) == (1, 2, 2)
    assert h.last_error == "timeout"


def test_stale_after_one_gives_up_at_the_first_miss(clock: FakeClock) -> None:
    h = HealthTracker(monotonic=clock.monotonic, stale_after=1)
    h.record_good()
    assert h.record_failure("timeout") == Transition(
        old=UP, new=STALE, failures=1, reason="timeout"
    )
    assert h.record_failure("timeout") is None


@pytest.mark.parametrize("bad", [0, -1])
def test_stale_after_must_be_at_least_one(clock: FakeClock, bad: int) -> None:
    with pytest.raises(ValueError, match="stale_after must be at least 1"):
        HealthTracker(monotonic=clock.monotonic, stale_after=bad)
