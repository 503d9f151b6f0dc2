"""Builds the device drivers a config describes, with their links.

Devices behind one gateway (same transport, host and port) or on one serial bus (same serial
port) share one link: one request at a time on a serial bus, up to ``connections`` at once on a
TCP gateway. MQTT devices each keep their own client to the broker.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from controller.config import Config, ConfigError, DeviceConfig
from devices import (
    ModbusLink,
    ModbusRtuLink,
    ModbusTcpLink,
    ModbusTlsLink,
    MqttDevice,
    RegisterMapError,
    RegisterMapLoad,
    RegisterMapMeter,
    SunSpecBattery,
    SunSpecInverter,
    SunSpecMeter,
    load_register_map,
    tls_context,
)

__all__ = ["Driver", "build_fleet", "link_key"]

Driver = (
    SunSpecMeter
    | SunSpecInverter
    | SunSpecBattery
    | RegisterMapMeter
    | RegisterMapLoad
    | MqttDevice
)


def link_key(dev: DeviceConfig) -> tuple[str, str, int]:
    """Devices with the same key share one link."""
    if dev.transport == "modbus-rtu":
        return (dev.transport, dev.serial_port or "", 0)
    return (dev.transport, dev.host or "", dev.endpoint_port)


def _link(
    dev: DeviceConfig, config: Config, clock: Callable[[], float], base_dir: Path | None
) -> ModbusLink:
    timeout = config.poll.timeout_s
    if dev.transport == "modbus-rtu":
        assert dev.serial_port is not None  # the config model requires it
        return ModbusRtuLink(
            dev.serial_port,
            baudrate=dev.baudrate,
            parity=dev.parity,
            timeout_s=timeout,
            clock=clock,
        )
    assert dev.host is not None
    if dev.transport == "modbus-tls":
        assert dev.tls_cert_file is not None
        assert dev.tls_key_file is not None
        try:  # loads the files once, here, never per request
            here = base_dir or Path.cwd()
            ctx = tls_context(
                cert_file=str(here / dev.tls_cert_file),
                key_file=str(here / dev.tls_key_file),
                ca_file=None if dev.tls_ca_file is None else str(here / dev.tls_ca_file),
            )
        except (OSError, ValueError) as err:
            raise ConfigError(
                "<config>", f"devices.{dev.name}.tls_cert_file", f"cannot load TLS files: {err}"
            ) from None
        return ModbusTlsLink(
            dev.host,
            dev.endpoint_port,
            sslctx=ctx,
            connections=dev.connections,
            timeout_s=timeout,
            clock=clock,
        )
    return ModbusTcpLink(
        dev.host, dev.endpoint_port, connections=dev.connections, timeout_s=timeout, clock=clock
    )


def build_fleet(
    config: Config, *, clock: Callable[[], float], base_dir: Path | None = None
) -> dict[str, Driver]:
    shared: dict[tuple[str, str, int], ModbusLink] = {}
    fleet: dict[str, Driver] = {}
    for dev in config.devices:
        if dev.transport == "mqtt":
            fleet[dev.name] = _mqtt_driver(dev, config, clock)
            continue
        key = link_key(dev)
        if key not in shared:
            shared[key] = _link(dev, config, clock, base_dir)
        fleet[dev.name] = _driver(dev, shared[key], config.interval_s, base_dir)
    return fleet


def _mqtt_driver(dev: DeviceConfig, config: Config, clock: Callable[[], float]) -> MqttDevice:
    assert dev.mqtt is not None
    assert dev.host is not None
    assert dev.kind != "battery"  # the config model refuses batteries over MQTT
    m = dev.mqtt
    ramp = dev.ramp_kw_per_s * config.interval_s if dev.ramp_kw_per_s is not None else None
    return MqttDevice(
        dev.name,
        dev.kind,
        host=dev.host,
        port=dev.endpoint_port,
        telemetry_topic=m.telemetry_topic,
        paths=m.paths,
        scale=m.scale,
        setpoint_topic=m.setpoint_topic,
        status_topic=m.status_topic,
        rating_kw=dev.rating_kw,
        min_kw=dev.min_kw,
        ramp_kw_per_interval=ramp if dev.kind == "load" else None,
        revert_s=dev.revert_s,
        max_age_s=m.max_age_s,
        keepalive_s=config.mqtt.keepalive_s,
        queue_size=config.mqtt.queue_size,
        clock=clock,
    )


def _driver(
    dev: DeviceConfig, link: ModbusLink, interval_s: float, base_dir: Path | None = None
) -> Driver:
    ramp = dev.ramp_kw_per_s * interval_s if dev.ramp_kw_per_s is not None else None
    if dev.register_map is not None:
        path = dev.register_map
        if (
            not path.startswith("builtin:")
            and base_dir is not None
            and not Path(path).is_absolute()
        ):
            path = str(base_dir / path)
        try:
            rmap = load_register_map(path)
            if dev.kind == "load":
                assert dev.rating_kw is not None  # the config model requires it
                return RegisterMapLoad(
                    dev.name,
                    link,
                    dev.unit,
                    rmap,
                    rating_kw=dev.rating_kw,
                    min_kw=dev.min_kw,
                    revert_s=dev.revert_s,
                    ramp_kw_per_interval=ramp,
                )
        except RegisterMapError as err:
            raise ConfigError("<config>", f"devices.{dev.name}.register_map", str(err)) from None
        return RegisterMapMeter(
            dev.name, link, dev.unit, rmap, p_limit_kw=dev.rating_kw or 100_000.0
        )
    if dev.kind == "meter":
        # plausible head power: a generous multiple of anything a feeder carries
        return SunSpecMeter(dev.name, link, dev.unit, p_limit_kw=dev.rating_kw or 100_000.0)
    if dev.kind == "pv":
        assert dev.rating_kw is not None  # the config model requires it
        return SunSpecInverter(
            dev.name,
            link,
            dev.unit,
            rating_kw=dev.rating_kw,
            revert_s=dev.revert_s,
            ramp_kw_per_interval=ramp,
            revert_limit_pct=dev.revert_limit_pct,
        )
    assert dev.rating_kw is not None
    assert dev.energy_kwh is not None
    return SunSpecBattery(
        dev.name,
        link,
        dev.unit,
        rating_kw=dev.rating_kw,
        energy_kwh=dev.energy_kwh,
        revert_s=dev.revert_s,
        ramp_kw_per_interval=ramp,
    )
