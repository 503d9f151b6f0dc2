"""structlog set-up: JSON lines when not on a terminal, a readable console when on one.

Everything feederd logs goes through structlog (the controller, the devices, the rig). Lines
that libraries write through the standard ``logging`` module (aiomqtt, paho, pandapower) are
rendered by the same processors, so a journal or a log shipper sees one format; they are kept at
warning and above, and pymodbus's own connection errors are left out (the daemon reports each
device's state itself, once per change).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

__all__ = ["configure_logging"]

_HANDLER_NAME = "feederd"


def configure_logging(*, level: str = "info", stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if out.isatty()
        else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # the standard library's loggers (libraries) through the same renderer
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()]))
    # pymodbus logs every failed connection at error level, aiomqtt every message its full
    # queue drops: the daemon reports those itself, once per change (mqtt_messages_dropped)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("mqtt").setLevel(logging.ERROR)
