"""``feederd demo``: the daemon against the built-in HIL feeder (see controller/commands/rig/demo.py)."""

from __future__ import annotations

import argparse
import re

from controller.commands.args import non_negative, port, positive

_SITE = re.compile(r"^[A-Za-z0-9_-]+$")


def mqtt_url(text: str) -> str:
    from controller.dr.intake import parse_mqtt_url  # noqa: PLC0415

    try:
        parse_mqtt_url(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def site_name(text: str) -> str:
    if not _SITE.match(text):
        raise argparse.ArgumentTypeError(f"site must be letters, digits, '-' or '_': {text!r}")
    return text


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
    parser.add_argument(
        "--mqtt",
        type=mqtt_url,
        default=None,
        metavar="URL",
        help="mqtt://host[:port] (or mqtts://): DR events on feederd/<site>/dr/event",
    )
    parser.add_argument("--journal", default=None, metavar="PATH", help="SQLite journal file")
    parser.add_argument(
        "--site", type=site_name, default="demo", help="site name, topic root feederd/<site>"
    )
    parser.add_argument(
        "--uniform",
        action="store_true",
        help="a feeder that follows the case file (one load factor, exact meters, no meters "
        "along it) instead of the varied one, for comparison",
    )
    parser.add_argument(
        "--simulated",
        action="store_true",
        help="run the daemon and the feeder on a simulated clock, as fast as they go",
    )


def run(args: argparse.Namespace) -> int:
    from controller.commands.rig.demo import DemoOptions, run_demo  # noqa: PLC0415 (the HIL)

    return run_demo(
        DemoOptions(
            duration_s=args.duration,
            import_limit_kw=args.import_limit_kw,
            export_limit_kw=args.export_limit_kw,
            interval_s=args.interval,
            metrics_port=args.metrics_port,
            log_level=args.log_level,
            mqtt_url=args.mqtt,
            journal_path=args.journal,
            site=args.site,
            simulated=args.simulated,
            uniform=args.uniform,
        )
    )
