"""The one reconnection backoff: exponential, capped, jittered, never zero."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from devices.backoff import FLOOR_S, Backoff


def test_it_doubles_from_its_floor_up_to_its_cap_and_starts_again_after_a_success() -> None:
    b = Backoff(0.5, 4.0, rng=random.Random(7))
    waits = [b.failed() for _ in range(6)]
    for n, wait in enumerate(waits, start=1):
        full = min(4.0, 0.5 * 2 ** (n - 1))
        assert 0.5 * full <= wait < full, (n, wait)  # jitter takes off up to half
    assert b.failures == 6
    b.succeeded()
    assert 0.25 <= b.failed() < 0.5


@given(lo=st.floats(-10, 10), hi=st.floats(-10, 100), n=st.integers(1, 200))
def test_a_wait_is_never_below_the_floor_nor_above_the_cap(lo: float, hi: float, n: int) -> None:
    b = Backoff(lo, hi, rng=random.Random(n))
    for _ in range(n):
        wait = b.failed()
        assert FLOOR_S <= wait <= b.max_s
