"""From a VTN event to feederd DR events (``controller.openadr.signals``), and the ``[openadr]``
table as ``feederd check`` reads it: what a utility's signal asks of the feeder, and every way a
VTN event or a config is refused, with the reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.config.openadr import LevelConfig, SimpleLevels
from controller.dr.events import DrEvent, EventType, parse_payload
from controller.openadr.signals import (
    INVALID_DATA,
    INVALID_ID,
    NOT_RECOGNIZED,
    SIGNAL_NOT_SUPPORTED,
    EventKey,
    Refused,
    feederd_id,
    map_event,
    parse_feederd_id,
)
from tests.controller.test_config_cli import EXAMPLE, cli, write_config
from tests.support.tls import make_certs

NOW = datetime(2026, 8, 26, 12, 0, tzinfo=UTC)
LEVELS = SimpleLevels(
    level_1=LevelConfig(type="reduce_by", kw=300),
    level_2=LevelConfig(type="import_limit", kw=2500),
)


def event(
    *payloads: float,
    name: str = "SIMPLE",
    kind: str = "level",
    start: datetime = NOW + timedelta(hours=1),
    minutes: float = 30,
    status: str = "far",
    mod: int = 0,
    eid: str = "ev-1",
    measurement: dict[str, Any] | None = None,
    context: str = "oadr://utility/dr",
) -> dict[str, Any]:
    """An event as openleadr's parser hands it to the VEN."""
    signal: dict[str, Any] = {
        "signal_name": name,
        "signal_type": kind,
        "signal_id": "s1",
        "intervals": [
            {
                "dtstart": start + timedelta(minutes=minutes * i),
                "duration": timedelta(minutes=minutes),
                "signal_payload": p,
                "uid": i,
            }
            for i, p in enumerate(payloads)
        ],
    }
    if measurement is not None:
        signal["measurement"] = measurement
    return {
        "event_descriptor": {
            "event_id": eid,
            "modification_number": mod,
            "event_status": status,
            "market_context": context,
            "priority": 0,
        },
        "active_period": {"dtstart": start, "duration": timedelta(minutes=minutes * len(payloads))},
        "event_signals": [signal],
        "response_required": "always",
    }


def mapped(ev: dict[str, Any], **kw: Any) -> list[dict[str, Any]]:
    out = map_event(ev, now=kw.pop("now", NOW), simple=LEVELS, priority=100, **kw)
    return list(out.payloads)


def test_simple_levels_become_the_configured_events_and_equal_runs_merge() -> None:
    got = mapped(event(1, 1, 2, 0, 1))
    assert [(p["type"], p["kw"]) for p in got] == [
        ("reduce_by", 300.0),
        ("import_limit", 2500.0),
        ("reduce_by", 300.0),
    ]
    start = NOW + timedelta(hours=1)
    assert got[0]["start"] == start.isoformat()
    assert got[0]["end"] == (start + timedelta(minutes=60)).isoformat()  # two intervals merged
    assert got[2]["start"] == (start + timedelta(minutes=120)).isoformat()  # level 0 is a gap
    assert [p["id"] for p in got] == ["oadr:ev-1:0:0", "oadr:ev-1:0:1", "oadr:ev-1:0:2"]
    assert {p["priority"] for p in got} == {100}
    for p in got:  # every payload is one the DR service accepts as it is
        assert isinstance(parse_payload(p, now=NOW), DrEvent)


def test_load_dispatch_setpoint_and_delta_with_their_scale() -> None:
    setpoint = mapped(event(2800, name="LOAD_DISPATCH", kind="setpoint"))
    assert [(p["type"], p["kw"]) for p in setpoint] == [("import_limit", 2800.0)]
    watts = {"name": "powerReal", "unit": "W", "scale": "none"}
    delta = mapped(event(-450_000, 0, name="LOAD_DISPATCH", kind="delta", measurement=watts))
    assert [(p["type"], p["kw"]) for p in delta] == [("reduce_by", 450.0)]
    mega = {"name": "powerReal", "unit": "W", "scale": "M"}
    assert mapped(event(2.5, name="LOAD_DISPATCH", kind="setpoint", measurement=mega))[0][
        "kw"
    ] == pytest.approx(2500.0)
    parsed = parse_payload(delta[0], now=NOW)
    assert getattr(parsed, "type", None) is EventType.REDUCE_BY


@pytest.mark.parametrize(
    ("ev", "code", "words"),
    [
        (event(5.0, name="ELECTRICITY_PRICE", kind="price"), SIGNAL_NOT_SUPPORTED, "not supported"),
        (event(3), SIGNAL_NOT_SUPPORTED, "level_3 is not set"),
        (event(4), INVALID_DATA, "not 0-3"),
        (event(1.5), INVALID_DATA, "not 0-3"),
        (event(1, minutes=0), INVALID_DATA, "duration of 0 s"),
        (event(1, start=NOW - timedelta(hours=2)), INVALID_DATA, "over already"),
        (event(300, name="LOAD_DISPATCH", kind="delta"), SIGNAL_NOT_SUPPORTED, "more load"),
        (
            event(1, name="LOAD_DISPATCH", kind="multiplier"),
            SIGNAL_NOT_SUPPORTED,
            "setpoint, delta",
        ),
        (event(float("nan")), INVALID_DATA, "not a number"),
        (event(1, eid="x" * 65), INVALID_ID, "eventID"),
        (event(1, eid="has space"), INVALID_ID, "eventID"),
        (
            event(1, name="LOAD_DISPATCH", kind="setpoint", measurement={"name": "voltage"}),
            INVALID_DATA,
            "not real power",
        ),
    ],
)
def test_what_the_ven_refuses_and_why(ev: dict[str, Any], code: int, words: str) -> None:
    with pytest.raises(Refused) as err:
        mapped(ev)
    assert err.value.code == code
    assert words in err.value.reason


def test_two_signals_and_too_many_intervals_are_refused() -> None:
    ev = event(1)
    ev["event_signals"].append(dict(ev["event_signals"][0]))
    with pytest.raises(Refused, match="2 signals"):
        mapped(ev)
    with pytest.raises(Refused, match="more than 96"):
        mapped(event(*([1] * 97), minutes=5))


def test_market_context_filter() -> None:
    with pytest.raises(Refused) as err:
        mapped(event(1, context="oadr://other"), market_contexts=["oadr://utility/dr"])
    assert err.value.code == NOT_RECOGNIZED
    assert mapped(event(1), market_contexts=["oadr://utility/dr"])


def test_a_modification_during_the_event_keeps_only_what_is_to_come() -> None:
    start = NOW - timedelta(minutes=45)
    got = mapped(event(2, 1, 1, start=start, mod=3))
    assert [p["type"] for p in got] == ["reduce_by"]  # the level-2 interval is over
    assert got[0]["id"] == "oadr:ev-1:3:1"


def test_cancellation_and_completion_ask_nothing() -> None:
    cancel = map_event(event(1, status="cancelled", mod=2), now=NOW, simple=LEVELS, priority=0)
    assert cancel.cancelled
    assert cancel.payloads == ()
    done = map_event(
        event(1, start=NOW - timedelta(hours=2), status="completed"),
        now=NOW,
        simple=LEVELS,
        priority=0,
    )
    assert done.status == "completed"


def test_ids_round_trip() -> None:
    key = EventKey("ev:with:colons", 12)
    assert parse_feederd_id(feederd_id(key, 3)) == key
    assert parse_feederd_id("peak-shave-1") is None
    assert parse_feederd_id("oadr:x:y:z") is None


# -- the [openadr] table, as `feederd check` reads it -----------------------------------------


def _config(tmp_path: Path, table: str) -> Path:
    text = EXAMPLE.read_text(encoding="utf-8") + "\n" + table
    return write_config(tmp_path, text)


def _table(certs_dir: Path, **over: str) -> str:
    keys = {
        "enabled": "true",
        "vtn_url": '"https://127.0.0.1:8443/OpenADR2/Simple/2.0b"',
        "ven_name": '"feeder-7"',
        "cert_file": f'"{certs_dir / "client.pem"}"',
        "key_file": f'"{certs_dir / "client.key"}"',
        "ca_file": f'"{certs_dir / "ca.pem"}"',
        "vtn_fingerprint": '"9B:6D:11:22:33:44:55:66:77:88"',
    }
    keys.update(over)
    body = "\n".join(f"{k} = {v}" for k, v in keys.items() if v)
    return f'[openadr]\n{body}\n[openadr.simple]\nlevel_1 = {{ type = "reduce_by", kw = 300 }}\n'


def test_check_accepts_a_complete_openadr_table(tmp_path: Path) -> None:
    make_certs(tmp_path)
    proc = cli("check", "--config", str(_config(tmp_path, _table(tmp_path))))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"vtn_url": '"http://127.0.0.1:8080/OpenADR2/Simple/2.0b"'}, "must be https://"),
        ({"vtn_url": '"not a url"'}, "is not an http(s) URL"),
        ({"vtn_fingerprint": '"12345"'}, "is not a certificate fingerprint"),
        ({"vtn_fingerprint": ""}, "needs the VTN's 'vtn_fingerprint'"),
        ({"key_file": ""}, "give both 'cert_file' and 'key_file'"),
        ({"ven_name": ""}, "needs 'ven_name'"),
        ({"cert_file": '"missing.pem"'}, "openadr.cert_file"),
        ({"poll_s": "0.001"}, "poll_s"),
    ],
)
def test_check_refuses_a_broken_openadr_table(
    tmp_path: Path, over: dict[str, str], words: str
) -> None:
    make_certs(tmp_path)
    proc = cli("check", "--config", str(_config(tmp_path, _table(tmp_path, **over))))
    assert proc.returncode == 2
    assert words in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_a_level_without_a_positive_reduction_is_refused(tmp_path: Path) -> None:
    make_certs(tmp_path)
    table = _table(tmp_path).replace("kw = 300", "kw = 0")
    proc = cli("check", "--config", str(_config(tmp_path, table)))
    assert proc.returncode == 2
    assert "positive 'kw'" in proc.stderr
