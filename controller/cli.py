"""The ``feederd`` command line (DESIGN.md §5).

Exit 0 on success; 2 with a one-line message on stderr for bad usage or a bad config, never a
traceback for a user's error.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from controller.config import ConfigError, LoadedConfig, load_config

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="feederd", description="Demand-response controller for a distribution feeder.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", required=True, help="path to feederd.toml")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    check = sub.add_parser("check", help="validate a config and print the feeder and devices")
    check.add_argument("--config", required=True, help="path to feederd.toml")

    demo = sub.add_parser("demo", help="the daemon against the built-in HIL feeder (IEEE 33-bus)")
    demo.add_argument("--duration", type=_positive, default=60.0, help="seconds (default 60)")
    demo.add_argument("--import-limit-kw", type=float, default=None, help="feeder import limit")
    demo.add_argument(
        "--export-limit-kw", type=_non_negative, default=None, help="feeder export limit"
    )
    demo.add_argument(
        "--interval", type=_positive, default=2.0, help="control interval, s (default 2)"
    )
    demo.add_argument(
        "--metrics-port", type=_port, default=None, help="serve metrics on 127.0.0.1:N"
    )
    demo.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    return p


def _positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            return _check(load_config(args.config))
        if args.command == "run":
            return _run(load_config(args.config), args.log_level)
        if args.command == "demo":
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
    except ConfigError as err:
        print(f"feederd: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2  # unreachable: argparse requires a command


def _check(loaded: LoadedConfig) -> int:
    cfg, net = loaded.config, loaded.network
    print(f"config {loaded.source}: ok")
    print(
        f"site {cfg.site}, interval {cfg.interval_s:g} s, metrics "
        f"{cfg.metrics.host}:{cfg.metrics.port}" + ("" if cfg.metrics.enabled else " (off)")
    )
    print(
        f"feeder {net.name}: {len(net.buses)} buses, {len(net.branches)} branches, "
        f"slack bus {net.slack_bus}, load {net.total_load_kw:.0f} kW / "
        f"{sum(b.q_load_kvar for b in net.buses):.0f} kvar, "
        f"voltage band {cfg.feeder.v_min_pu:g}-{cfg.feeder.v_max_pu:g} p.u."
    )
    limits = []
    if cfg.dr.import_limit_kw is not None:
        limits.append(f"import <= {cfg.dr.import_limit_kw:g} kW")
    if cfg.dr.export_limit_kw is not None:
        limits.append(f"export <= {cfg.dr.export_limit_kw:g} kW")
    print("default limits: " + (", ".join(limits) if limits else "none"))
    print(f"devices ({len(cfg.devices)}):")
    print(f"  {'name':<16} {'kind':<8} {'bus':>4}  {'address':<24} {'rating':>10}  revert")
    for d in cfg.devices:
        rating = f"{d.rating_kw:g} kW" if d.rating_kw else "-"
        if d.kind == "battery":
            rating += f"/{d.energy_kwh:g} kWh"
        revert = "-" if d.kind == "meter" else f"{d.revert_s} s"
        kind = "meter*" if d.head else d.kind
        print(
            f"  {d.name:<16} {kind:<8} {d.bus:>4}  {d.host}:{d.port} unit {d.unit:<6} {rating:>10}  {revert}"
        )
    print("(* feeder-head meter)")
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
