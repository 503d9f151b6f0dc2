"""The device drivers a config describes, with the links they share.

Devices behind one gateway (same transport, host and port) or on one serial bus (same serial
port) share one link: one request at a time on a serial bus, up to ``connections`` at once on a
TCP gateway. MQTT devices each keep their own client to the broker (``serve``, run by the
daemon's task group). The fleet owns the links: ``close`` closes every device, then every link.

Adding a device kind: a driver module in ``devices/`` that meets ``devices.Device``, and one
branch in ``_driver`` below that builds it from its config entry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from controller.config import (
    Config,
    ConfigError,
    DeviceConfig,
    LoadedConfig,
    MqttTransport,
    RtuTransport,
    TlsTransport,
    resolve_path,
)
from devices import (
    Background,
    Device,
    ModbusLink,
    ModbusRtuLink,
    ModbusTcpLink,
    ModbusTlsLink,
    MqttDevice,
    Ramp,
    RegisterMap,
    RegisterMapLoad,
    RegisterMapMeter,
    SunSpecBattery,
    SunSpecInverter,
    SunSpecMeter,
    VoltVarCurve,
    tls_context,
)

__all__ = ["Fleet"]

METER_RANGE_KW = 100_000.0
"""A meter reading beyond this (without a rating in the config) is implausible."""


class Fleet(Mapping[str, Device]):
    """The devices by name (a read-only mapping), and the links behind them."""

    def __init__(self, devices: Mapping[str, Device], links: tuple[ModbusLink, ...] = ()) -> None:
        self._devices = dict(devices)
        self.links = links

    def __getitem__(self, name: str) -> Device:
        return self._devices[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._devices)

    def __len__(self) -> int:
        return len(self._devices)

    def background(self) -> list[tuple[str, Background]]:
        """The devices that keep a connection of their own (``serve`` in the task group)."""
        return [(n, d) for n, d in self._devices.items() if isinstance(d, Background)]

    @classmethod
    def build(
        cls,
        loaded: LoadedConfig,
        *,
        monotonic: Callable[[], float],
        wall_s: Callable[[], float] = time.time,
    ) -> Fleet:
        """The drivers of every configured device; a file that will not load (a TLS
        certificate) is a ``ConfigError``. ``wall_s`` is the daemon's wall clock (Unix
        seconds), against which the timestamps MQTT meters publish are judged."""
        config = loaded.config
        links: dict[tuple[str, str, int], ModbusLink] = {}
        devices: dict[str, Device] = {}
        control = config.control
        volt_var = (
            VoltVarCurve(points=tuple(control.volt_var_curve))
            if control.volt_var_fallback
            else None
        )
        for i, dev in enumerate(config.devices):
            t = dev.transport
            ramp = (
                None
                if dev.ramp_kw_per_s is None
                else Ramp(kw_per_s=dev.ramp_kw_per_s, interval_s=config.interval_s)
            )
            if isinstance(t, MqttTransport):
                devices[dev.name] = _mqtt_driver(dev, t, config, ramp, monotonic, wall_s)
                continue
            if t.link_key not in links:
                links[t.link_key] = _link(dev, i, config, loaded, monotonic)
            rmap = loaded.register_maps.get(dev.name)
            devices[dev.name] = _driver(dev, links[t.link_key], rmap, ramp, volt_var)
        return cls(devices, tuple(links.values()))

    async def close(self) -> None:
        for device in self._devices.values():
            await device.close()
        for link in self.links:
            await link.close()


def _link(
    dev: DeviceConfig,
    index: int,
    config: Config,
    loaded: LoadedConfig,
    monotonic: Callable[[], float],
) -> ModbusLink:
    timeout = config.poll.timeout_s
    t = dev.transport
    if isinstance(t, RtuTransport):
        return ModbusRtuLink(
            t.serial_port,
            baudrate=t.baudrate,
            parity=t.parity,
            timeout_s=timeout,
            monotonic=monotonic,
        )
    if isinstance(t, TlsTransport):
        try:  # loads the files once, here, never per request
            ctx = tls_context(
                cert_file=str(resolve_path(t.cert_file, loaded.base_dir)),
                key_file=str(resolve_path(t.key_file, loaded.base_dir)),
                ca_file=None
                if t.ca_file is None
                else str(resolve_path(t.ca_file, loaded.base_dir)),
            )
        except (OSError, ValueError) as err:
            raise ConfigError(
                loaded.source,
                f"devices[{index}].transport.cert_file",
                f"cannot load TLS files: {err}",
            ) from None
        return ModbusTlsLink(
            t.host,
            t.port,
            sslctx=ctx,
            connections=t.connections,
            timeout_s=timeout,
            monotonic=monotonic,
        )
    assert not isinstance(t, MqttTransport)
    return ModbusTcpLink(
        t.host, t.port, connections=t.connections, timeout_s=timeout, monotonic=monotonic
    )


def _mqtt_driver(
    dev: DeviceConfig,
    t: MqttTransport,
    config: Config,
    ramp: Ramp | None,
    monotonic: Callable[[], float],
    wall_s: Callable[[], float],
) -> MqttDevice:
    return MqttDevice(
        dev.name,
        dev.kind,
        host=t.host,
        port=t.port,
        telemetry_topic=t.telemetry_topic,
        paths=t.paths,
        scale=t.scale,
        setpoint_topic=t.setpoint_topic,
        status_topic=t.status_topic,
        # a meter's rating is its plausible range (as for Modbus meters)
        rating_kw=dev.rating_kw or (METER_RANGE_KW if dev.kind == "meter" else None),
        min_kw=dev.min_kw,
        ramp=ramp,
        revert_s=dev.revert_s,
        max_age_s=t.max_age_s,
        keepalive_s=config.mqtt.keepalive_s,
        queue_size=config.mqtt.queue_size,
        monotonic=monotonic,
        wall_s=wall_s,
    )


def _driver(
    dev: DeviceConfig,
    link: ModbusLink,
    rmap: RegisterMap | None,
    ramp: Ramp | None,
    volt_var: VoltVarCurve | None = None,
) -> Device:
    t = dev.transport
    assert not isinstance(t, MqttTransport)
    unit = t.unit
    match dev.kind:
        case "meter" if rmap is not None:
            return RegisterMapMeter(
                dev.name, link, unit, rmap, p_limit_kw=dev.rating_kw or METER_RANGE_KW
            )
        case "meter":
            return SunSpecMeter(dev.name, link, unit, p_limit_kw=dev.rating_kw or METER_RANGE_KW)
        case "load":
            assert rmap is not None  # the config model requires a map for a Modbus load
            assert dev.rating_kw is not None
            return RegisterMapLoad(
                dev.name,
                link,
                unit,
                rmap,
                rating_kw=dev.rating_kw,
                min_kw=dev.min_kw,
                revert_s=dev.revert_s,
                ramp=ramp,
            )
        case "pv":
            assert dev.rating_kw is not None  # the config model requires it
            return SunSpecInverter(
                dev.name,
                link,
                unit,
                rating_kw=dev.rating_kw,
                revert_s=dev.revert_s,
                ramp=ramp,
                revert_limit_pct=dev.revert_limit_pct,
                rating_kva=dev.rating_kva,
                volt_var=volt_var,
            )
        case "battery":
            assert dev.rating_kw is not None
            assert dev.energy_kwh is not None
            return SunSpecBattery(
                dev.name,
                link,
                unit,
                rating_kw=dev.rating_kw,
                energy_kwh=dev.energy_kwh,
                revert_s=dev.revert_s,
                ramp=ramp,
            )
    raise AssertionError(f"no driver for kind {dev.kind!r}")  # the config model's Literal
