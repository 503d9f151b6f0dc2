"""``feederd check --config PATH``: validate a config, print the feeder and device summary."""

from __future__ import annotations

import argparse

from controller.config import LoadedConfig, load_config

HELP = "validate a config and print the feeder and devices"
LISTED_BUS_METERS = 40
"""Meters along the feeder listed one a line; the rest (thousands, with AMI) are counted."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="path to feederd.toml")


def run(args: argparse.Namespace) -> int:
    return _check(load_config(args.config))


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
        f"voltage band {cfg.feeder.v_min_pu:g}-{cfg.feeder.v_max_pu:g} p.u. "
        "(dispatch aims {:.3f}-{:.3f})".format(*cfg.feeder.dispatch_band_pu)
    )
    print(_network_line(loaded))
    for gen in net.generators:
        print(
            f"  generator at bus {gen.bus}: fixed injection {gen.p_kw:g} kW / {gen.q_kvar:g} kvar"
        )
    bands = loaded.bus_bands_pu
    if bands:
        print(f"voltage limits from the case on {len(bands)} bus(es), the config's on the others")
    elif cfg.feeder.voltage_limits == "case":
        print('voltage_limits = "case", but the case gives no bus a limit: the config\'s band')
    limits = []
    if cfg.dr.import_limit_kw is not None:
        limits.append(f"import <= {cfg.dr.import_limit_kw:g} kW")
    if cfg.dr.export_limit_kw is not None:
        limits.append(f"export <= {cfg.dr.export_limit_kw:g} kW")
    print("default limits: " + (", ".join(limits) if limits else "none"))
    for line in _outlook_lines(loaded):
        print(line)
    print(f"devices ({len(cfg.devices)}):")
    print(f"  {'name':<16} {'kind':<8} {'bus':>4}  {'address':<32} {'rating':>10}  revert/class")
    shown_meters = 0
    for d in cfg.devices:
        if d.kind == "meter" and not d.head:
            shown_meters += 1
            if shown_meters > LISTED_BUS_METERS:
                continue
        rating = f"{d.rating_kw:g} kW" if d.rating_kw else "-"
        if d.kind == "battery":
            rating += f"/{d.energy_kwh:g} kWh"
        if d.kind == "load":
            rating = f"{d.min_kw:g}-{rating}"
        revert = "-" if d.kind == "meter" else f"{d.revert_s} s"
        if d.kind == "meter":
            revert = f"class {d.accuracy_pct or cfg.estimation.accuracy_pct:g}%"
        if d.kind == "load":
            revert += f" (to full draw), shed {d.shed_cost_per_kwh:g}/kWh"
        kind = "meter*" if d.head else d.kind
        print(f"  {d.name:<16} {kind:<8} {d.bus:>4}  {d.address:<32} {rating:>10}  {revert}")
    if shown_meters > LISTED_BUS_METERS:
        print(f"  ... and {shown_meters - LISTED_BUS_METERS} more meters along the feeder")
    print("(* feeder-head meter)")
    for line in _estimation_lines(loaded):
        print(line)
    loads = [d for d in cfg.devices if d.kind == "load"]
    if loads and cfg.dr.import_limit_kw is not None:
        shed = sum((d.rating_kw or 0.0) - d.min_kw for d in loads)
        print(
            f"note: {len(loads)} load(s) revert to their full draw (up to {shed:g} kW more "
            "import) if feederd stops rewriting them; the import limit then relies on the daemon"
        )
    o = cfg.openadr
    if o.enabled:
        levels = [
            f"{n}: {lv.type} {lv.kw:g} kW"
            for n in (1, 2, 3)
            if (lv := o.simple.level(n)) is not None
        ]
        print(
            f"openadr: VEN {o.ven_name!r} -> {o.vtn_url}; SIMPLE "
            + ("; ".join(levels) if levels else "levels unset (refused)")
            + "; LOAD_DISPATCH setpoint/delta"
        )
    for note in loaded.notes:
        print(f"note: {note}")
    return 0


def _network_line(loaded: LoadedConfig) -> str:
    """The slack voltage and where it comes from, and what else the model holds."""
    feeder, net = loaded.config.feeder, loaded.network
    origin = "feeder.v_slack_pu" if feeder.v_slack_pu is not None else "the case"
    if feeder.v_slack_from_meter:
        slack = f"the head meter's voltage, else {net.v_slack_pu:g} p.u. ({origin})"
    else:
        slack = f"{net.v_slack_pu:g} p.u. ({origin}; v_slack_from_meter = false)"
    charged = sum(1 for br in net.branches if br.in_service and br.b_pu)
    taps = sum(1 for br in net.branches if br.in_service and br.tap != 1.0)
    shunts = sum(1 for b in net.buses if b.gs_kw or b.bs_kvar)
    return (
        f"slack voltage: {slack}; {charged} branch(es) with charging, {taps} transformer "
        f"tap(s), {shunts} bus shunt(s), {len(net.generators)} fixed generator(s)"
    )


def _estimation_lines(loaded: LoadedConfig) -> list[str]:
    """The meters along the feeder, how they are reached, and what the estimator does."""
    cfg, net = loaded.config, loaded.network
    meters = cfg.bus_meters
    est = cfg.estimation
    if not cfg.estimation_enabled:
        why = "estimation.enabled = false" if meters else "no meters along the feeder"
        return [f"state estimation: off ({why}): bus loads are the case's, scaled to the head"]
    load_buses = {b.id for b in net.buses if b.p_load_kw or b.q_load_kvar}
    metered = {d.bus for d in meters}
    gateways: dict[str, int] = {}
    mqtt = 0
    for d in meters:
        t = d.transport
        if t.type == "mqtt":
            mqtt += 1
        else:
            where = t.address.rsplit(" unit ", 1)[0]
            gateways[where] = gateways.get(where, 0) + 1
    reach = [f"{n} behind {g}" for g, n in sorted(gateways.items())[:3]]
    if len(gateways) > 3:
        reach.append(f"... {len(gateways)} Modbus links in all")
    if mqtt:
        reach.append(f"{mqtt} over MQTT")
    lines = [
        f"state estimation: on; {len(meters)} meter(s) along the feeder at {len(metered)} "
        f"bus(es), {len(metered & load_buses)} of the {len(load_buses)} load buses"
        + (f" ({'; '.join(reach)})" if reach else ""),
        f"  pseudo-loads elsewhere (sigma {est.pseudo_sigma_frac:g} x the head-scaled case "
        f"load), meters class {est.accuracy_pct:g}% (V {est.v_accuracy_pct:g}%), bad data "
        f"above {est.bad_data_threshold:g} sigma (at most {est.max_drops} dropped an interval)",
    ]
    shared = sorted(b for b in metered if sum(1 for d in meters if d.bus == b) > 1)
    if shared:
        lines.append(
            f"note: bus(es) {', '.join(map(str, shared[:10]))} have more than one meter: each "
            "is taken as a measurement of the whole bus's load"
        )
    return lines


def _outlook_lines(loaded: LoadedConfig) -> list[str]:
    """The dispatch's horizon, its prices and its forecasts."""
    from controller.config import horizon_steps  # noqa: PLC0415

    cfg = loaded.config
    c = cfg.control
    steps = horizon_steps(cfg)
    if c.horizon_h <= 0:
        lines = ["horizon: the interval alone (horizon_h = 0): no plan, events seen as they start"]
    else:
        lines = [
            f"horizon: {c.horizon_h:g} h in {steps} steps ({min(c.horizon_fine_steps, steps)} "
            f"of {cfg.interval_s:g} s, then blocks of {c.horizon_block_s:g} s; the first "
            f"{min(c.horizon_network_steps, steps)} with the full network), energy left at its "
            "end worth "
            + (
                "the mean import price"
                if c.battery_end_value_per_kwh is None
                else f"{c.battery_end_value_per_kwh:g}/kWh"
            )
        ]
    feed = f", a price feed on {cfg.topic_root}/price over it" if cfg.mqtt.enabled else ""
    tariff = cfg.tariff
    if tariff is None:
        lines.append(f"prices: {cfg.dr.price_per_kwh:g}/kWh at every step (no [tariff]){feed}")
    else:
        lines.append(f"tariff ({cfg.tariff_timezone}){feed}:")
        days = (
            [("every day", tariff.periods)]
            if tariff.weekday is None and tariff.weekend is None
            else [("weekdays", tariff.day(0)), ("weekends", tariff.day(5))]
        )
        for name, periods in days:
            text = "; ".join(
                f"{p.start} import {p.import_price:g}"
                + ("" if p.export_price is None else f" export {p.export_price:g}")
                for p in periods or []
            )
            lines.append(f"  {name}: {text}")
    f = cfg.forecast
    if not f.enabled or c.horizon_h <= 0:
        why = "forecast.enabled = false" if not f.enabled else "no horizon"
        lines.append(f"forecasts: off ({why}): each step sees the loads and sun of now")
    else:
        site = (
            f"site {f.latitude:g}, {f.longitude:g} (clear-sky PV)"
            if f.latitude is not None and f.longitude is not None
            else "no site (PV from its history alone)"
        )
        lines.append(
            f"forecasts: {f.model} model, {f.history_days} days of {f.slot_s} s slots, "
            f"{site}, time zone {f.timezone}"
        )
    return lines
