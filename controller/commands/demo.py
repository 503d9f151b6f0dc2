"""``feederd demo``: the daemon against the built-in HIL feeder (see controller/demo.py)."""

from __future__ import annotations

import argparse

from controller.commands.args import non_negative, port, positive

HELP = "the daemon against the built-in HIL feeder (IEEE 33-bus)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=positive, default=60.0, help="seconds (default 60)")
    parser.add_argument("--import-limit-kw", type=float, default=None, help="feeder import limit")
    parser.add_argument(
        "--export-limit-kw", type=non_negative, default=None, help="feeder export limit"
    )
    parser.add_argument(
        "--interval", type=positive, default=2.0, help="control interval, s (default 2)"
    )
    parser.add_argument(
        "--metrics-port", type=port, default=None, help="serve metrics on 127.0.0.1:N"
    )
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )


def run(args: argparse.Namespace) -> int:
    from controller.demo import DemoOptions, run_demo  # noqa: PLC0415 (pulls in the HIL)

    return run_demo(
        DemoOptions(
            duration_s=args.duration,
            import_limit_kw=args.import_limit_kw,
            export_limit_kw=args.export_limit_kw,
            interval_s=args.interval,
            metrics_port=args.metrics_port,
            log_level=args.log_level,
        )
    )
