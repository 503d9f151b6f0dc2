"""The flexibility contract (``controller.flex``): what a feederd publishes on ``<root>/flex`` is
what the coordinator reads back, and every message the coordinator must not trust is refused
with one line that says why: malformed, stale, from the future, for another site, beyond the
feeder's rating, or a curve that is not a cost of holding a limit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.flex import (
    MAX_CURVE_POINTS,
    MAX_FLEX_BYTES,
    FlexEvent,
    Flexibility,
    FlexRejected,
    parse_flex,
)

NOW = datetime(2030, 6, 4, 17, 0, 5, tzinfo=UTC)


def _flex(**changes: Any) -> Flexibility:
    base: dict[str, Any] = {
        "site": "north-1",
        "at": NOW,
        "seq": 812,
        "interval_s": 5.0,
        "window_s": 3600.0,
        "import_kw": 2311.4,
        "limit_kw": None,
        "min_kw": 1740.0,
        "max_kw": 2380.0,
        "curve": ((1740.0, 61.2), (1953.3, 18.0), (2166.7, 4.1), (2380.0, 0.0)),
        "health": "ok",
        "devices_up": 17,
        "devices": 17,
        "events": (
            FlexEvent(
                id="fleet:evening:3",
                type="import_limit",
                kw=2000.0,
                start=NOW,
                end=NOW + timedelta(hours=2),
                source="mqtt",
                active=True,
            ),
        ),
    }
    base.update(changes)
    return Flexibility(**base)


def _doc(**changes: Any) -> dict[str, Any]:
    doc = _flex().to_json()
    doc.update(changes)
    return doc


def _parse(doc: dict[str, Any] | bytes, **kw: Any) -> Flexibility:
    payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    options: dict[str, Any] = {
        "now": NOW,
        "max_age_s": 60.0,
        "site": "north-1",
        "rating_kw": 6000.0,
    }
    options.update(kw)
    return parse_flex(payload, **options)


def test_what_a_feeder_publishes_the_coordinator_reads_back() -> None:
    flex = _flex()
    assert _parse(flex.to_json()) == flex
    assert flex.flexible


def test_a_feeder_without_flexibility_this_interval_says_so_with_nulls() -> None:
    flex = _flex(min_kw=None, max_kw=None, curve=(), health="fallback")
    back = _parse(flex.to_json())
    assert not back.flexible
    assert back.curve == ()
    assert back.health == "fallback"


def test_the_curve_is_linear_between_points_and_free_at_the_top() -> None:
    flex = _flex()
    assert flex.cost_at(2380.0) == 0.0
    assert flex.cost_at(3000.0) == 0.0
    assert flex.cost_at(1740.0) == pytest.approx(61.2)
    assert flex.cost_at(1846.65) == pytest.approx((61.2 + 18.0) / 2)


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"x" * (MAX_FLEX_BYTES + 1), "larger than"),
        (b'{"a": [[[[[1]]]]]}', "nested deeper"),
        ({"extra": 1}, "unknown key(s): extra"),
        ({"v": 2}, "'v' must be 1"),
        ({"site": "south-9"}, "on the topic of 'north-1'"),
        ({"site": ""}, "'site' must be a non-empty string"),
        ({"at": "yesterday"}, "'at' is not an RFC 3339 timestamp"),
        ({"at": "2030-06-04T17:00:05"}, "needs a time zone"),
        ({"at": (NOW - timedelta(seconds=61)).isoformat()}, "stale: made 61 s ago"),
        ({"at": (NOW + timedelta(minutes=5)).isoformat()}, "from the future"),
        ({"max_kw": 9000.0}, "'max_kw' 9000 kW is beyond the feeder's rating of 6000 kW"),
        ({"import_kw": -7000.0}, "'import_kw' -7000 kW is beyond the feeder's rating"),
        ({"min_kw": "1740"}, "'min_kw' must be a number, got str"),
        ({"min_kw": True}, "'min_kw' must be a number, got bool"),
        ({"min_kw": None}, "both numbers or both null"),
        ({"min_kw": 2500.0, "max_kw": 2380.0}, "'min_kw' 2500 is above 'max_kw' 2380"),
        ({"curve": "cheap"}, "'curve' must be a list"),
        ({"curve": []}, f"1 to {MAX_CURVE_POINTS} points"),
        ({"curve": [[1740.0, 1.0]] * (MAX_CURVE_POINTS + 1)}, f"1 to {MAX_CURVE_POINTS} points"),
        ({"curve": [[1740.0, 61.2], [2380.0]]}, "curve point 1 must be [kw, cost]"),
        ({"curve": [[1740.0, -1.0], [2380.0, 0.0]]}, "curve point 0 has a cost of -1"),
        ({"curve": [[1800.0, 9.0], [2380.0, 0.0]]}, "must run from 'min_kw' to 'max_kw'"),
        ({"curve": [[1740.0, 9.0], [1740.0, 5.0], [2380.0, 0.0]]}, "not above the one before"),
        ({"curve": [[1740.0, 9.0], [2000.0, 12.0], [2380.0, 0.0]]}, "costs more than the one"),
        ({"health": "great"}, "'health' must be one of"),
        ({"seq": -1}, "'seq' must be a non-negative integer"),
        ({"interval_s": 0}, "'interval_s' must be in (0, 86400]"),
        ({"events": [{}] * 11}, "at most 10"),
        ({"events": [{"id": "e"}]}, "needs string 'id', 'type' and 'source'"),
    ],
)
def test_a_message_not_to_trust_is_refused_with_its_reason(
    doc: dict[str, Any] | bytes, reason: str
) -> None:
    with pytest.raises(FlexRejected) as err:
        _parse(doc if isinstance(doc, bytes) else _doc(**doc))
    assert reason in err.value.reason
    assert "\n" not in err.value.reason


def test_numbers_json_cannot_carry_are_refused() -> None:
    payload = json.dumps(_doc()).replace("2311.4", "1e999").encode()  # parses to infinity
    with pytest.raises(FlexRejected, match="'import_kw' must be finite"):
        _parse(payload)


@given(
    top=st.floats(min_value=-5000.0, max_value=5900.0),
    span=st.floats(min_value=1.0, max_value=3000.0),
    costs=st.lists(st.floats(min_value=0.0, max_value=1e6), min_size=2, max_size=6),
)
def test_any_well_formed_curve_round_trips(top: float, span: float, costs: list[float]) -> None:
    """Any convex-or-not, non-increasing curve from min to max within the rating reads back
    as published (to the contract's rounding)."""
    low = max(top - span, -5900.0)
    n = len(costs)
    ordered = sorted(costs, reverse=True)
    ordered[-1] = 0.0
    kws = [round(low + (top - low) * k / (n - 1), 2) for k in range(n)]
    if len(set(kws)) < n:
        return  # rounding merged two points: not a curve the feeder would send
    flex = _flex(min_kw=kws[0], max_kw=kws[-1], curve=tuple(zip(kws, ordered, strict=True)))
    back = _parse(flex.to_json())
    assert back.min_kw == kws[0]
    assert back.max_kw == kws[-1]
    assert [k for k, _ in back.curve] == kws
