"""``feederd run --config PATH``: the daemon."""

from __future__ import annotations

import argparse
import asyncio
import signal

from controller.config import LoadedConfig, load_config

HELP = "run the daemon"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="path to feederd.toml")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )


def run(args: argparse.Namespace) -> int:
    return _run(load_config(args.config), args.log_level)


def _run(loaded: LoadedConfig, log_level: str) -> int:
    from controller.clock import SystemClock  # noqa: PLC0415
    from controller.daemon import Controller  # noqa: PLC0415
    from controller.journal import Journal  # noqa: PLC0415
    from controller.logs import configure_logging  # noqa: PLC0415
    from controller.metrics import Metrics  # noqa: PLC0415

    configure_logging(level=log_level)

    async def daemon() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        metrics = Metrics()
        if loaded.config.metrics.enabled:
            metrics.serve(loaded.config.metrics.host, loaded.config.metrics.port)
        journal = (
            Journal(loaded.config.journal.path, retention_days=loaded.config.journal.retention_days)
            if loaded.config.journal.path
            else None
        )
        controller = Controller(loaded, clock=SystemClock(), metrics=metrics, journal=journal)
        try:
            await controller.run(stop)
        finally:
            await controller.close()
            metrics.shutdown()
            if journal is not None:
                journal.close()

    asyncio.run(daemon())
    return 0
