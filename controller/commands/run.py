"""``feederd run --config PATH``: the daemon, as systemd runs it.

sd_notify: ``READY=1`` once serving, ``WATCHDOG=1`` after every completed cycle, ``STATUS=``
each cycle, ``RELOADING=1`` on SIGHUP, ``STOPPING=1`` on SIGTERM/SIGINT. SIGHUP re-reads the
config: a bad one is refused (logged, shown in STATUS) and the running one kept; a good one
restarts the controller with it. SIGTERM stops within 2 s: a cycle still running after
``STOP_GRACE_S`` is cancelled (setpoints are idempotent; every control has a revert timer).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import structlog

from controller.config import ConfigError, LoadedConfig, load_config

if TYPE_CHECKING:
    from controller.metrics import Metrics
    from controller.notify import Notifier

log = structlog.get_logger("feederd")

HELP = "run the daemon"

STOP_GRACE_S = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="path to feederd.toml")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )


def run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    _settings(loaded)  # secrets and certificates are checked before anything starts
    return _run(loaded, args.log_level, Path(args.config))


def _settings(loaded: LoadedConfig) -> object:
    from controller.dr.connect import metrics_tls_files, mqtt_settings  # noqa: PLC0415

    if loaded.config.metrics.enabled:
        metrics_tls_files(loaded.config, source=loaded.source)
    if not loaded.config.mqtt.enabled:
        return None
    return mqtt_settings(loaded.config, source=loaded.source)


def _run(loaded: LoadedConfig, log_level: str, path: Path | None = None) -> int:
    from controller.logs import configure_logging  # noqa: PLC0415

    configure_logging(level=log_level)
    asyncio.run(_serve(loaded, path))
    return 0


class _Signals:
    """SIGTERM/SIGINT set ``stop``; SIGHUP sets ``reload``."""

    def __init__(self) -> None:
        self.stop, self.reload = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload.set)


async def _next_config(
    signals: _Signals, path: Path | None, current: LoadedConfig, notifier: Notifier
) -> LoadedConfig | None:
    """Wait for a stop (None) or a reload with a good config (it); a bad one is refused."""
    while True:
        waiters = [
            asyncio.ensure_future(signals.stop.wait()),
            asyncio.ensure_future(signals.reload.wait()),
        ]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        if signals.stop.is_set():
            notifier.stopping()
            log.info("stopping", reason="signal")
            return None
        signals.reload.clear()
        notifier.reloading()
        try:
            if path is None:
                raise ConfigError("<reload>", "", "no config file to reload")
            candidate = load_config(path)
            _settings(candidate)
        except ConfigError as err:
            log.error("reload_refused", error=str(err), kept=current.source)
            notifier.notify("READY=1", f"STATUS=reload refused, old config kept: {err}")
            continue
        log.info("reload", config=candidate.source)
        return candidate


async def _serve(loaded: LoadedConfig, path: Path | None) -> None:
    from controller.dr.connect import metrics_tls_files  # noqa: PLC0415
    from controller.metrics import Metrics  # noqa: PLC0415
    from controller.notify import Notifier  # noqa: PLC0415

    notifier = Notifier.from_env()
    signals = _Signals()
    metrics = Metrics()
    served: tuple[str, int, tuple[str, str] | None] | None = None
    current: LoadedConfig | None = loaded
    try:
        while current is not None:
            m = current.config.metrics
            tls = metrics_tls_files(current.config, source=current.source) if m.enabled else None
            endpoint = (m.host, m.port, tls) if m.enabled else None
            if endpoint != served:  # moved, or a new certificate: serve it afresh
                metrics.shutdown()
                if endpoint is not None:
                    certfile, keyfile = tls or (None, None)
                    metrics.serve(m.host, m.port, certfile=certfile, keyfile=keyfile)
                served = endpoint
            current = await _generation(current, path, signals, metrics, notifier)
    finally:
        metrics.shutdown()
        notifier.close()


async def _generation(
    loaded: LoadedConfig, path: Path | None, signals: _Signals, metrics: Metrics, notifier: Notifier
) -> LoadedConfig | None:
    """Run the controller on one config until a stop (None) or a good reload (the new one)."""
    from controller.clock import SystemClock  # noqa: PLC0415
    from controller.daemon import Controller, CycleRecord  # noqa: PLC0415
    from controller.dr.connect import mqtt_settings  # noqa: PLC0415
    from controller.dr.runtime import DrRuntime  # noqa: PLC0415

    cfg = loaded.config
    mqtt = mqtt_settings(cfg, source=loaded.source) if cfg.mqtt.enabled else None
    clock = SystemClock()
    dr = DrRuntime.open(cfg, clock=clock, metrics=metrics, mqtt=mqtt)

    def on_cycle(rec: CycleRecord) -> None:
        notifier.watchdog()  # only after a completed cycle
        notifier.status(
            f"cycle {rec.cycle} {rec.status}, import {_kw(rec.import_kw)},"
            f" limit {_kw(rec.import_limit_kw)}, {rec.devices_up} devices up"
        )

    controller = Controller(
        loaded, clock=clock, metrics=metrics, journal=dr.journal, dr=dr.service, on_cycle=on_cycle
    )
    done = asyncio.Event()
    site = cfg.site
    tasks = [
        asyncio.create_task(controller.run(done), name=f"feederd[{site}].control"),
        asyncio.create_task(dr.run(done), name=f"feederd[{site}].mqtt"),
    ]
    watcher = asyncio.create_task(
        _next_config(signals, path, loaded, notifier), name=f"feederd[{site}].signals"
    )
    notifier.ready(f"running {site}: {len(cfg.devices)} devices, interval {cfg.interval_s:g} s")
    log.info("started", site=site, devices=len(cfg.devices), config=loaded.source)
    try:
        await asyncio.wait([watcher, *tasks], return_when=asyncio.FIRST_COMPLETED)
        done.set()
        _finished, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not watcher.done():
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            signals.stop.set()  # the control loop ended by itself: stop the daemon
        for task in tasks:
            if not task.cancelled() and (err := task.exception()) is not None:
                raise err
    finally:
        if cfg.on_stop == "release" and signals.stop.is_set():
            await _release(controller)
        await controller.close()
        dr.close()
    return None if watcher.cancelled() or signals.stop.is_set() else watcher.result()


@runtime_checkable
class _Releasable(Protocol):
    async def release(self) -> None: ...


RELEASE_TIMEOUT_S = 0.5


async def _release(controller: object) -> None:
    """Disable every control (PV limit off, battery idle, load ceiling lifted) before exiting,
    within ``RELEASE_TIMEOUT_S``: each driver that has one runs its own ``release()`` (it knows
    its control model, 123/124 or 704). A device that does not answer in time keeps its control
    until its revert timer lapses."""
    from controller.daemon import Controller  # noqa: PLC0415

    assert isinstance(controller, Controller)
    jobs = {
        asyncio.ensure_future(drv.release()): name
        for name, drv in controller.fleet.items()
        if isinstance(drv, _Releasable)
    }
    done, pending = await asyncio.wait(jobs, timeout=RELEASE_TIMEOUT_S) if jobs else (set(), set())
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    failed = sorted(
        jobs[t] for t in done if not t.cancelled() and t.exception() is not None
    ) + sorted(jobs[t] for t in pending)
    for task in done:
        if not task.cancelled() and (err := task.exception()) is not None:
            log.error("release_failed", device=jobs[task], error=f"{type(err).__name__}: {err}")
    for task in pending:
        log.error("release_failed", device=jobs[task], error="timed out")
    log.info("released", controls=len(jobs), failed=len(failed))


def _kw(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} kW"
