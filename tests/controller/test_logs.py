"""Logs: one JSON object per line when not on a terminal, readable text on one."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator

import pytest
import structlog

from controller.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_off_a_terminal() -> None:
    out = io.StringIO()
    configure_logging(level="info", stream=out)
    structlog.get_logger("feederd").info("cycle", cycle=3, status="optimal", import_kw=1999.5)
    event = json.loads(out.getvalue().splitlines()[-1])
    assert event["event"] == "cycle"
    assert event["import_kw"] == 1999.5
    assert event["level"] == "info"
    assert "timestamp" in event


def test_readable_console_on_a_terminal_and_level_filter() -> None:
    out = Terminal()
    configure_logging(level="warning", stream=out)
    log = structlog.get_logger("feederd")
    log.info("cycle", cycle=3)
    log.error("device_down", device="pv07", reason="timeout")
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())  # colours on a terminal
    assert "cycle" not in text
    assert "device_down" in text
    assert "device=pv07" in text
    assert not text.lstrip().startswith("{")


def test_devices_and_libraries_log_through_the_same_json_renderer() -> None:
    """An MQTT device's line (structlog) and a library's line (the standard ``logging``
    module) come out as JSON objects of the same shape; pymodbus's own noise does not."""
    import logging  # noqa: PLC0415

    from devices import MqttDevice  # noqa: PLC0415

    out = io.StringIO()
    configure_logging(level="info", stream=out)
    dev = MqttDevice(
        "pv9", "pv", host="127.0.0.1", telemetry_topic="t", paths={"p_kw": "p"}, rating_kw=10.0,
        monotonic=lambda: 0.0,
    )  # fmt: skip
    dev.handle("t", b"not json")
    dev.handle("t", b"still not json")  # counted, not logged again
    logging.getLogger("paho.mqtt.client").warning("socket error %s", "reset")
    logging.getLogger("pymodbus.logging").error("connection refused")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in lines] == ["mqtt_device_bad_payload", "socket error reset"]
    assert lines[0]["device"] == "pv9"
    assert lines[0]["level"] == "warning"
    assert lines[1]["logger"] == "paho.mqtt.client"
    assert lines[1]["level"] == "warning"
    assert all("timestamp" in e for e in lines)
    assert dev.bad_payloads == 2
