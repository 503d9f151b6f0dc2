"""Builds the device drivers a config describes: one Modbus link per host and port, shared."""

from __future__ import annotations

from collections.abc import Callable

from controller.config import Config, DeviceConfig
from devices import ModbusTcpLink, SunSpecBattery, SunSpecInverter, SunSpecMeter

__all__ = ["Driver", "build_fleet"]

Driver = SunSpecMeter | SunSpecInverter | SunSpecBattery


def build_fleet(config: Config, *, clock: Callable[[], float]) -> dict[str, Driver]:
    links: dict[tuple[str, int], ModbusTcpLink] = {}
    fleet: dict[str, Driver] = {}
    for dev in config.devices:
        key = (dev.host, dev.port)
        if key not in links:
            links[key] = ModbusTcpLink(
                dev.host, dev.port, timeout_s=config.poll.timeout_s, clock=clock
            )
        fleet[dev.name] = _driver(dev, links[key], config.interval_s)
    return fleet


def _driver(dev: DeviceConfig, link: ModbusTcpLink, interval_s: float) -> Driver:
    ramp = dev.ramp_kw_per_s * interval_s if dev.ramp_kw_per_s is not None else None
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
