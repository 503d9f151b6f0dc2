"""Prices for the horizon (``controller.prices``, pure): the tariff in its time zone and day
types, the price feed where it covers a step, each step's time-weighted mean; the tariff's
config errors (one line naming the key); and a feed's garbage refused with its reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.config import ConfigError, TariffConfig, parse_config
from controller.prices import (
    MAX_FEED_BYTES,
    MAX_FEED_PERIODS,
    FeedRejected,
    Tariff,
    parse_price_feed,
    step_prices,
)

MONDAY = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # 13:00 in Paris (UTC+1 in March)
TOU = {
    "periods": [
        {"from": "00:00", "import": 0.10, "export": 0.02},
        {"from": "16:00", "import": 0.40, "export": 0.08},
        {"from": "21:00", "import": 0.20},
    ]
}


def _tariff(table: dict[str, Any], zone: str = "Europe/Paris") -> Tariff:
    return Tariff(TariffConfig.model_validate(table), zone)


def _iso(at: datetime) -> str:
    return at.isoformat()


def test_the_tariff_prices_each_step_in_its_time_zone() -> None:
    # hourly steps from 13:00 Paris: 13, 14, 15 at the day price, 16-20 at the peak, 21 on
    steps = (3600.0,) * 10
    starts = tuple(3600.0 * k for k in range(10))
    p = step_prices(MONDAY, starts, steps, default_per_kwh=0.5, tariff=_tariff(TOU))
    assert p.import_per_kwh == pytest.approx((0.10,) * 3 + (0.40,) * 5 + (0.20,) * 2)
    # export: the tariff's, and where a period gives none, the import price in force
    assert p.export_per_kwh == pytest.approx((0.02,) * 3 + (0.08,) * 5 + (0.20,) * 2)
    # a step across a change takes the time-weighted mean: 15:30-16:30 Paris
    half = step_prices(
        MONDAY + timedelta(hours=2, minutes=30),
        (0.0,),
        (3600.0,),
        default_per_kwh=0.5,
        tariff=_tariff(TOU),
    )
    assert half.import_per_kwh[0] == pytest.approx(0.25)
    # without a tariff: the default, export earning the same
    flat = step_prices(MONDAY, starts, steps, default_per_kwh=0.5)
    assert flat.import_per_kwh == flat.export_per_kwh == (0.5,) * 10


def test_weekends_have_their_own_periods() -> None:
    table = {
        "weekday": TOU["periods"],
        "weekend": [{"from": "00:00", "import": 0.05}],
    }
    friday_evening = datetime(2026, 3, 6, 22, 0, tzinfo=UTC)  # 23:00 Friday in Paris
    p = step_prices(
        friday_evening,
        (0.0, 3600.0),
        (3600.0, 3600.0),
        default_per_kwh=1.0,
        tariff=_tariff(table),
    )
    assert p.import_per_kwh == pytest.approx((0.20, 0.05))  # Saturday from midnight


def test_the_feed_prices_the_steps_it_covers_and_the_tariff_the_rest() -> None:
    feed = parse_price_feed(
        json.dumps(
            {
                "id": "day-ahead",
                "import": [
                    {
                        "start": _iso(MONDAY + timedelta(hours=1)),
                        "end": _iso(MONDAY + timedelta(hours=2)),
                        "price": 0.9,
                    },
                    {
                        "start": _iso(MONDAY + timedelta(hours=2)),
                        "end": _iso(MONDAY + timedelta(hours=2, minutes=30)),
                        "price": 0.7,
                    },
                ],
            }
        ),
        now=MONDAY,
    )
    starts = (0.0, 3600.0, 7200.0, 10800.0)
    steps = (3600.0,) * 4
    p = step_prices(MONDAY, starts, steps, default_per_kwh=0.5, tariff=_tariff(TOU), feed=feed)
    assert p.import_per_kwh == pytest.approx((0.10, 0.9, 0.5 * 0.7 + 0.5 * 0.10, 0.40))
    assert p.export_per_kwh == pytest.approx((0.02, 0.02, 0.02, 0.08))  # the tariff's
    assert p.feed_share == pytest.approx(1.5 / 4)


def _feed(**over: Any) -> str:
    doc = {
        "id": "f1",
        "import": [{"start": _iso(MONDAY), "end": _iso(MONDAY + timedelta(hours=1)), "price": 0.3}],
        **over,
    }
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (_feed(id=""), "'id' must be a non-empty string"),
        (_feed(extra=1), "unknown key 'extra'"),
        (json.dumps({"id": "f"}), "give 'import' or 'export'"),
        (_feed(**{"import": []}), "no periods"),
        (_feed(**{"import": {"start": 1}}), "'import' must be a list"),
        (
            _feed(**{"import": [{"start": _iso(MONDAY), "price": 1}]}),
            "'import'[0]: missing key 'end'",
        ),
        (
            _feed(**{"import": [{"start": "noon", "end": _iso(MONDAY), "price": 1}]}),
            "'import'[0]: 'start' is not an RFC 3339 timestamp",
        ),
        (
            _feed(
                export=[
                    {
                        "start": _iso(MONDAY),
                        "end": _iso(MONDAY + timedelta(hours=1)),
                        "price": "cheap",
                    }
                ]
            ),
            "'export'[0]: 'price' must be a finite number",
        ),
        (
            _feed(
                **{
                    "import": [
                        {
                            "start": _iso(MONDAY),
                            "end": _iso(MONDAY + timedelta(hours=1)),
                            "price": 5000,
                        }
                    ]
                }
            ),
            "outside ±1000",
        ),
        (
            _feed(
                **{
                    "import": [
                        {
                            "start": _iso(MONDAY),
                            "end": _iso(MONDAY + timedelta(hours=2)),
                            "price": 1,
                        },
                        {
                            "start": _iso(MONDAY + timedelta(hours=1)),
                            "end": _iso(MONDAY + timedelta(hours=3)),
                            "price": 1,
                        },
                    ]
                }
            ),
            "'import'[1] starts at",
        ),
        (
            _feed(
                **{
                    "import": [
                        {
                            "start": _iso(MONDAY - timedelta(hours=2)),
                            "end": _iso(MONDAY - timedelta(hours=1)),
                            "price": 1,
                        }
                    ]
                }
            ),
            "every period has ended already",
        ),
        (
            _feed(
                **{
                    "import": [
                        {"start": _iso(MONDAY), "end": _iso(MONDAY + timedelta(days=8)), "price": 1}
                    ]
                }
            ),
            "beyond 7 days",
        ),
        ("[" * 50 + "]" * 50, "nested deeper"),
        (" " * (MAX_FEED_BYTES + 1), "larger than"),
    ],
)
def test_a_feed_that_cannot_be_used_is_refused_with_its_reason(payload: str, reason: str) -> None:
    with pytest.raises(FeedRejected) as err:
        parse_price_feed(payload, now=MONDAY)
    assert reason in err.value.reason


def test_a_feed_is_bounded_in_periods() -> None:
    start = MONDAY
    periods = [
        {
            "start": _iso(start + timedelta(minutes=k)),
            "end": _iso(start + timedelta(minutes=k + 1)),
            "price": 0.1,
        }
        for k in range(MAX_FEED_PERIODS + 1)
    ]
    with pytest.raises(FeedRejected, match="'import' has 2017 periods: at most 2016"):
        parse_price_feed(json.dumps({"id": "f", "import": periods}), now=MONDAY)


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_any_bytes_end_in_a_feed_or_its_refusal(payload: bytes | str) -> None:
    reason = ""
    try:
        parse_price_feed(payload, now=MONDAY)
    except FeedRejected as err:
        reason = err.reason or "(empty)"
    assert "\n" not in reason


BASE: dict[str, Any] = {
    "site": "x",
    "feeder": {"case": "builtin:case33bw"},
    "devices": [
        {
            "name": "h",
            "kind": "meter",
            "bus": 1,
            "head": True,
            "transport": {"type": "tcp", "host": "127.0.0.1"},
        }
    ],
}


@pytest.mark.parametrize(
    ("tariff", "message"),
    [
        (
            {"periods": [{"from": "07:00", "import": 0.1}]},
            'tariff.periods: the first period starts at 07:00: a day\'s first period starts at "00:00"',
        ),
        (
            {"periods": [{"from": "00:00", "import": 0.1}, {"from": "00:00", "import": 0.2}]},
            "tariff.periods: period [1] (from 00:00) does not start after period [0]",
        ),
        (
            {"periods": [{"from": "00:00", "import": 0.1}, {"from": "25:00", "import": 0.2}]},
            'tariff.periods[1].from: must be a time of day "HH:MM"',
        ),
        (
            {"periods": [{"from": "00:00", "import": float("nan")}]},
            "tariff.periods[0].import: must be a finite number",
        ),
        (
            {"periods": [{"from": "00:00", "import": 0.1, "export": 1e6}]},
            "tariff.periods[0].export: Input should be less than or equal to 1000",
        ),
        ({"periods": [{"from": "00:00"}]}, "tariff.periods[0].import: missing required key"),
        (
            {"periods": [{"from": "00:00", "import": 0.1, "price": 1}]},
            "tariff.periods[0].price: unknown key",
        ),
        (
            {"weekday": [{"from": "00:00", "import": 0.1}]},
            "tariff: 'weekday' without 'weekend' or 'periods': weekends have no price",
        ),
        ({}, "tariff: give 'periods' (every day), or 'weekday' and 'weekend'"),
        (
            {"timezone": "Europe/Nowhere", "periods": [{"from": "00:00", "import": 0.1}]},
            "tariff.timezone: is not a known IANA time zone",
        ),
        (
            {"periods": [{"from": "00:00", "import": 0.1}] * 97},
            "tariff.periods: List should have at most 96",
        ),
    ],
)
def test_tariff_config_errors_are_one_line_naming_the_key(
    tariff: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, "tariff": tariff}, source="feederd.toml", base_dir=Path("."))
    text = str(err.value)
    assert text.startswith("feederd.toml: ")
    assert "\n" not in text
    assert message in text, text


def test_a_tariff_and_its_time_zone_are_read() -> None:
    loaded = parse_config(
        {**BASE, "tariff": TOU, "forecast": {"timezone": "Europe/Paris"}},
        source="feederd.toml",
        base_dir=Path("."),
    )
    assert loaded.config.tariff_timezone == "Europe/Paris"
    assert loaded.config.tariff is not None
    assert len(loaded.config.tariff.day(0)) == 3
