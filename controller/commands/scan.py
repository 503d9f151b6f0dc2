"""``feederd scan --host H --port P [--unit U] [--json]``: SunSpec discovery of one device.

Finds the ``SunS`` marker (40000, 0, 50000), walks the model chain and decodes every model
pysunspec2 knows, then prints the chain, the key values and a ``[[devices]]`` entry to start
the config from. A device that does not answer, or is not SunSpec, is one line on stderr and
exit 1; bad arguments exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from controller.commands.args import port as port_arg
from controller.commands.args import positive

HELP = "SunSpec discovery of one device: model chain and key values"

KEY_POINTS: dict[int, tuple[str, ...]] = {
    1: ("Mn", "Md", "SN", "Vr", "DA"),
    101: ("W", "PhVphA", "A", "Hz", "St"),
    102: ("W", "PhVphA", "A", "Hz", "St"),
    103: ("W", "PPVphAB", "A", "Hz", "St"),
    120: ("DERTyp", "WRtg", "VARtg", "WHRtg", "MaxChaRte"),
    121: ("WMax", "VRef", "VArMaxQ1"),
    123: ("Conn", "WMaxLimPct", "WMaxLimPct_RvrtTms", "WMaxLim_Ena"),
    124: ("WChaMax", "StorCtl_Mod", "ChaState", "MinRsvPct", "OutWRte", "InWRte"),
    201: ("W", "VAR", "PPV", "A", "Hz"),
    202: ("W", "VAR", "PPV", "A", "Hz"),
    203: ("W", "VAR", "PPV", "A", "Hz"),
    204: ("W", "VAR", "PPV", "A", "Hz"),
    701: ("W", "VAR", "LLV", "A", "Hz", "InvSt"),
    702: ("WMaxRtg", "VAMaxRtg", "WChaRteMaxRtg", "WDisChaRteMaxRtg"),
    704: ("WMaxLimPctEna", "WMaxLimPct", "WMaxLimPctRvrtTms", "WSetEna", "WSet"),
    713: ("WHRtg", "WHAvail", "SoC", "SoH"),
}


def _unit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"a Modbus unit id is 0..255, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", required=True, help="device or gateway address")
    parser.add_argument("--port", type=port_arg, default=502, help="Modbus TCP port (502)")
    parser.add_argument("--unit", type=_unit, default=1, help="Modbus unit id (1)")
    parser.add_argument("--timeout", type=positive, default=2.0, help="per request, seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    import logging  # noqa: PLC0415

    from devices import DeviceError  # noqa: PLC0415

    # pymodbus logs every failed connection itself; scan says what went wrong in one line
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        result = asyncio.run(scan(args.host, args.port, args.unit, args.timeout))
    except DeviceError as err:
        print(f"feederd scan: {err.device}: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_text(result))
    return 0


def suggest_kind(ids: list[int]) -> str | None:
    """The config ``kind`` the chain suggests."""
    if any(m in ids for m in (201, 202, 203, 204)):
        return "meter"
    if 124 in ids or 713 in ids:
        return "battery"
    if 123 in ids or 704 in ids:
        return "pv"
    return None


async def scan(host: str, port: int, unit: int, timeout_s: float) -> dict[str, Any]:
    """Discover and decode; the result is what ``--json`` prints."""
    from devices import ModbusTcpLink  # noqa: PLC0415
    from devices.sunspec import UnknownModelError, layout  # noqa: PLC0415
    from devices.sunspec_device import SunSpecDevice  # noqa: PLC0415

    label = f"{host}:{port} unit {unit}"
    link = ModbusTcpLink(host, port, timeout_s=timeout_s, backoff_min_s=0.01)
    dev = SunSpecDevice(label, link, unit)
    try:
        chain = await dev.discover()  # a bare SunSpecDevice requires no particular model
        models: list[dict[str, Any]] = []
        for model_id, start, length in chain.models:
            entry: dict[str, Any] = {"id": model_id, "address": start, "length": length}
            try:
                model = layout(model_id)
            except UnknownModelError:
                entry.update(name=None, values={}, note="no definition in pysunspec2")
                models.append(entry)
                continue
            entry["name"] = model.name
            if length != model.length:
                entry.update(values={}, note=f"length differs from definition {model.length}")
            else:
                values = (await dev.read_models((model_id,)))[model_id]
                entry["values"] = {
                    k: v for k, v in values.items() if v is not None and k not in ("ID", "L")
                }
            models.append(entry)
    finally:
        await link.close()
    ids = [m["id"] for m in models]
    return {
        "host": host,
        "port": port,
        "unit": unit,
        "base_address": chain.base,
        "models": models,
        "suggested_kind": suggest_kind(ids),
    }


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _text(result: dict[str, Any]) -> str:
    lines = [
        f"SunSpec device at {result['host']}:{result['port']} unit {result['unit']}, "
        f"base address {result['base_address']}",
        "",
        f"{'model':>5}  {'name':<24} {'address':>7} {'length':>6}  key values",
    ]
    for m in result["models"]:
        keys = KEY_POINTS.get(m["id"], ())
        shown = [f"{k}={_fmt(m['values'][k])}" for k in keys if k in m.get("values", {})]
        note = m.get("note")
        lines.append(
            f"{m['id']:>5}  {(m['name'] or '?'):<24} {m['address']:>7} {m['length']:>6}  "
            + (note if note else " ".join(shown))
        )
    kind = result["suggested_kind"]
    if kind is not None:
        lines += [
            "",
            "config entry to start from:",
            "[[devices]]",
            'name = "CHANGE-ME"',
            f'kind = "{kind}"',
            "bus = 0  # the feeder bus it connects to",
            f'transport = {{ type = "tcp", host = "{result["host"]}", port = {result["port"]},'
            f" unit = {result['unit']} }}",
        ]
        rating = _nameplate_k(result, ("WMax", "WRtg", "WMaxRtg"))
        if kind != "meter":
            lines.append(f"rating_kw = {rating:g}" if rating else "rating_kw = 0.0  # CHANGE-ME")
        if kind == "battery":
            energy = _nameplate_k(result, ("WHRtg", "WHMaxRtg"))
            lines.append(f"energy_kwh = {energy:g}" if energy else "energy_kwh = 0.0  # CHANGE-ME")
    return "\n".join(lines)


def _nameplate_k(result: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    """The first positive nameplate value among ``keys`` (W or Wh), in kW or kWh."""
    for m in result["models"]:
        for key in keys:
            value = m.get("values", {}).get(key)
            if isinstance(value, int | float) and value > 0:
                return float(value) / 1000.0
    return None
