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
