"""``feederd run --config PATH``: the daemon, as systemd runs it.

sd_notify: ``READY=1`` once serving, ``WATCHDOG=1`` after every completed cycle, ``STATUS=``
each cycle, ``RELOADING=1`` on SIGHUP, ``STOPPING=1`` on SIGTERM/SIGINT. SIGHUP re-reads the
config through the same validation as ``check`` and ``run``: a bad one is refused (logged,
shown in STATUS) and the running one kept; a good one restarts the daemon with it (the metrics
endpoint stays up unless it moved). SIGTERM stops within 2 s: a cycle still running after
``STOP_GRACE_S`` is cancelled (setpoints are idempotent; every control has a revert timer).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from controller.config import ConfigError, LoadedConfig, load_config

if TYPE_CHECKING:
    from controller.dr.intake import MqttSettings
    from controller.metrics import Metrics
    from controller.notify import Notifier
    from controller.records import CycleRecord
    from controller.signals import Signals

log = structlog.get_logger("feederd")

HELP = "run the daemon"

STOP_GRACE_S = 1.0
"""How long a running cycle may take to finish once a stop or a reload is asked for."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="path to feederd.toml")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )


def run(args: argparse.Namespace) -> int:
    from controller.logs import configure_logging  # noqa: PLC0415

    # the validation of `feederd check` (secrets and certificates included), and here a
    # systemd credential must be there
    loaded = load_config(args.config, require_credentials=True)
    configure_logging(level=args.log_level)
    asyncio.run(_serve(loaded, Path(args.config)))
    return 0


def _settings(loaded: LoadedConfig) -> MqttSettings | None:
    """The MQTT settings (secrets read, TLS loaded) and the metrics certificate, checked
    (``load_config`` checked them already, through the same functions); every problem is a
    ``ConfigError``."""
    from controller.dr.connect import metrics_tls_files, mqtt_settings  # noqa: PLC0415

    if loaded.config.metrics.enabled:
        metrics_tls_files(loaded.config, source=loaded.source, base_dir=loaded.base_dir)
    if not loaded.config.mqtt.enabled:
        return None
    return mqtt_settings(loaded.config, source=loaded.source, base_dir=loaded.base_dir)


class _Endpoint:
    """The metrics endpoint across reloads: served afresh only when it moved or its
    certificate changed."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._served: tuple[str, int, tuple[str, str] | None] | None = None
        self._first = True

    def follow(self, loaded: LoadedConfig) -> None:
        from controller.dr.connect import metrics_tls_files  # noqa: PLC0415

        m = loaded.config.metrics
        tls = (
            metrics_tls_files(loaded.config, source=loaded.source, base_dir=loaded.base_dir)
            if m.enabled
            else None
        )
        endpoint = (m.host, m.port, tls) if m.enabled else None
        if endpoint == self._served:
            return
        old = self._served
        self.metrics.shutdown()
        try:
            self._listen(endpoint)
        except OSError as err:
            problem = f"cannot serve metrics on {m.host}:{m.port}: {err.strerror or err}"
            if old is None and self._first:  # at start: the config cannot be used as it is
                raise ConfigError(loaded.source, "metrics.port", problem) from None
            log.error("metrics_endpoint_failed", error=problem, kept=old is not None)
            self._listen(old)  # a reload that cannot serve keeps the endpoint it had
            endpoint = old
        finally:
            self._first = False
        self._served = endpoint

    def _listen(self, endpoint: tuple[str, int, tuple[str, str] | None] | None) -> None:
        if endpoint is not None:
            host, port, tls = endpoint
            certfile, keyfile = tls or (None, None)
            self.metrics.serve(host, port, certfile=certfile, keyfile=keyfile)


async def _serve(loaded: LoadedConfig, path: Path) -> None:
    from controller.metrics import Metrics  # noqa: PLC0415
    from controller.notify import Notifier  # noqa: PLC0415
    from controller.signals import Signals  # noqa: PLC0415

    notifier = Notifier.from_env()
    metrics = Metrics()
    endpoint = _Endpoint(metrics)
    current: LoadedConfig | None = loaded
    try:
        with Signals() as signals:
            while current is not None:
                endpoint.follow(current)
                current = await _generation(current, path, signals, metrics, notifier)
    finally:
        metrics.shutdown()
        notifier.close()


async def _generation(
    loaded: LoadedConfig, path: Path, signals: Signals, metrics: Metrics, notifier: Notifier
) -> LoadedConfig | None:
    """Run the daemon on one config until a stop (None) or a good reload (the new config)."""
    from controller.clock import SystemClock  # noqa: PLC0415
    from controller.daemon import Daemon  # noqa: PLC0415
    from devices.tasks import cancel_and_wait  # noqa: PLC0415

    cfg = loaded.config

    def on_cycle(rec: CycleRecord) -> None:
        notifier.watchdog()  # only after a completed cycle
        notifier.status(
            f"cycle {rec.cycle} {rec.status}, import {_kw(rec.import_kw)},"
            f" limit {_kw(rec.import_limit_kw)}, {rec.devices_up} devices up"
        )

    stop = asyncio.Event()
    async with Daemon.open(
        loaded, clock=SystemClock(), metrics=metrics, mqtt=_settings(loaded), on_cycle=on_cycle
    ) as daemon:
        control = asyncio.ensure_future(daemon.run(stop))
        notifier.ready(
            f"running {cfg.site}: {len(cfg.devices)} devices, interval {cfg.interval_s:g} s"
        )
        log.info("started", site=cfg.site, devices=len(cfg.devices), config=loaded.source)
        for note in loaded.notes:
            log.warning("config_note", note=note, config=loaded.source)
        try:
            successor = await _next(control, signals, path, loaded, notifier)
        finally:
            stop.set()
            _done, late = await asyncio.wait({control}, timeout=STOP_GRACE_S)
            await cancel_and_wait(list(late))
        if control.done() and not control.cancelled() and (err := control.exception()):
            raise err
        if successor is None and signals.stop.is_set() and cfg.on_stop == "release":
            await daemon.release()
    return successor


async def _next(
    control: asyncio.Future[None],
    signals: Signals,
    path: Path,
    current: LoadedConfig,
    notifier: Notifier,
) -> LoadedConfig | None:
    """Wait for a stop (None), a reload with a good config (it), or the control loop ending
    by itself (None: a bug, raised by the caller). A bad reload is refused and waited past."""

    def load() -> LoadedConfig:
        candidate = load_config(path, require_credentials=True)
        _settings(candidate)
        return candidate

    from controller.signals import next_config  # noqa: PLC0415

    candidate = await next_config(
        control, signals, notifier, load=load, error=ConfigError, current=current.source, logger=log
    )
    if candidate is not None:
        log.info("reload", config=candidate.source)
    return candidate


def _kw(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} kW"
