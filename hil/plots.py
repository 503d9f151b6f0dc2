"""PNG plots of a scenario run (matplotlib, Agg backend: no display needed).

``plot_run`` writes ``overview.png`` (the four panels stacked on one time axis) and each panel
on its own: ``import.png`` (head import against the DR limit, DR events shaded),
``devices.png`` (how many devices the controller could not read, the fault windows hatched and
labelled), ``voltages.png`` (the spread of bus voltages against the band) and ``der.png`` (PV available and
delivered, the curtailment between them, battery power and state of charge). A run of 12 h or
more, or one with a tariff, also gets ``days.png``: the head import against the cap, the
batteries' state of charge (each event's start marked with it) and the price, day by day.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MultipleLocator

from hil.kpis import COMPLIANCE_TOLERANCE, Sample, kpis
from hil.scenario import Scenario

__all__ = ["plot_run"]

_DR_COLOUR = "#f5b041"
_FAULT_COLOUR = "#c0392b"


def _hours(scenario: Scenario, samples: Sequence[Sample]) -> list[float]:
    return [scenario.start_hour + s.t_s / 3600.0 for s in samples]


def _clock_axis(ax: Axes, span_h: float) -> None:
    def fmt(x: float, _pos: int) -> str:
        minutes = round(x * 60.0)
        day = f"d{minutes // 1440 + 1} " if span_h > 24 and minutes % 1440 == 0 else ""
        return f"{day}{(minutes // 60) % 24:02d}:{minutes % 60:02d}"

    ax.xaxis.set_major_formatter(FuncFormatter(fmt))
    step = 0.25 if span_h <= 3 else 1.0 if span_h <= 12 else 3.0 if span_h <= 30 else 6.0
    ax.xaxis.set_major_locator(MultipleLocator(step))
    ax.grid(True, alpha=0.3)


def _shade_windows(ax: Axes, scenario: Scenario, *, faults: bool) -> None:
    """DR events shaded orange; with ``faults``, the fault windows hatched red and labelled."""
    h0 = scenario.start_hour
    for event in scenario.dr:
        ax.axvspan(
            h0 + event.start_s / 3600, h0 + event.end_s / 3600, color=_DR_COLOUR, alpha=0.15, lw=0
        )
    if not faults:
        return
    for i, fault in enumerate(scenario.fault):
        a, b = h0 + fault.start_s / 3600, h0 + fault.end_s / 3600
        ax.axvspan(a, b, color=_FAULT_COLOUR, alpha=0.08, lw=0, hatch="//")
        ax.annotate(
            f"{fault.device} {fault.kind}",
            xy=(a, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -4 - 11 * (i % 3)),
            textcoords="offset points",
            fontsize=7,
            color=_FAULT_COLOUR,
            va="top",
        )


def _import_panel(
    ax: Axes, scenario: Scenario, samples: Sequence[Sample], figs: dict[str, Any]
) -> None:
    hours = _hours(scenario, samples)
    _shade_windows(ax, scenario, faults=False)
    ax.plot(
        hours,
        [s.import_kw for s in samples],
        color="#1f4e79",
        lw=1.4,
        label="head import (physics)",
    )
    imp = [s.import_limit_kw if s.import_limit_kw is not None else float("nan") for s in samples]
    if any(s.import_limit_kw is not None for s in samples):
        ax.step(hours, imp, where="post", color="#d35400", lw=2, ls="--", label="DR import limit")
        ax.step(
            hours,
            [x * (1 + COMPLIANCE_TOLERANCE) for x in imp],
            where="post",
            color="#d35400",
            lw=0.8,
            alpha=0.6,
            label="limit + 2%",
        )
    if any(s.seen_import_limit_kw != s.import_limit_kw for s in samples):
        seen = [
            s.seen_import_limit_kw if s.seen_import_limit_kw is not None else float("nan")
            for s in samples
        ]
        ax.step(hours, seen, where="post", color="black", lw=1, ls=":", label="limit enforced")
    exp = [-s.export_limit_kw if s.export_limit_kw is not None else float("nan") for s in samples]
    if any(s.export_limit_kw is not None for s in samples):
        ax.step(
            hours, exp, where="post", color="#8e44ad", lw=2, ls="--", label="DR export limit (−)"
        )
    if min(s.import_kw for s in samples) < 0 < max(s.import_kw for s in samples):
        ax.axhline(0.0, color="black", lw=0.6)
    ax.set_ylabel("kW (+ import)")
    compliance = figs["dr_compliance"]
    summary = (
        "no DR event"
        if compliance is None
        else f"DR compliance {100 * compliance:.1f}%  ·  time to comply {figs['time_to_comply_s']:g} s"
        f"  ·  {figs['energy_over_limit_kwh']:.1f} kWh over the limit"
    )
    ax.set_title(f"Feeder head import — {summary}", fontsize=10, loc="left")
    ax.legend(loc="lower left", fontsize=8, ncol=4, framealpha=0.8)


def _voltage_panel(
    ax: Axes, scenario: Scenario, samples: Sequence[Sample], figs: dict[str, Any]
) -> None:
    hours = _hours(scenario, samples)
    v_min_pu, v_max_pu = figs["v_band_pu"]
    _shade_windows(ax, scenario, faults=False)
    lo = [min(s.v_pu.values()) for s in samples]
    hi = [max(s.v_pu.values()) for s in samples]
    ax.fill_between(hours, lo, hi, color="#95a5a6", alpha=0.35, lw=0, label="all buses")
    ax.plot(hours, lo, color="#2874a6", lw=1.2, label="lowest bus")
    ax.plot(hours, hi, color="#b03a2e", lw=1.2, label="highest bus")
    busbar = [s.v_slack_pu for s in samples if s.v_slack_pu is not None]
    if len(busbar) == len(samples):
        ax.plot(hours, busbar, color="#6c3483", lw=1.0, ls=":", label="busbar (slack)")
    ax.axhline(
        v_min_pu,
        color="black",
        ls="--",
        lw=1,
        label=f"band {v_min_pu:g}–{v_max_pu:g} pu",
    )
    ax.axhline(v_max_pu, color="black", ls="--", lw=1)
    out_lo = [(h, v) for h, v in zip(hours, lo, strict=True) if v < v_min_pu - 1e-6]
    out_hi = [(h, v) for h, v in zip(hours, hi, strict=True) if v > v_max_pu + 1e-6]
    for points in (out_lo, out_hi):
        if points:
            ax.scatter(
                [h for h, _v in points], [v for _h, v in points], s=8, color=_FAULT_COLOUR, zorder=3
            )
    ax.set_ylabel("voltage, pu")
    ax.set_title(
        f"Bus voltages — {figs['voltage_violation_bus_intervals']} bus-intervals outside the band"
        f"  ·  range {figs['v_min_pu']:.3f}–{figs['v_max_pu']:.3f} pu",
        fontsize=10,
        loc="left",
    )
    ax.legend(loc="lower left", fontsize=8, ncol=4, framealpha=0.8)


def _der_panel(
    ax: Axes, scenario: Scenario, samples: Sequence[Sample], figs: dict[str, Any]
) -> None:
    hours = _hours(scenario, samples)
    _shade_windows(ax, scenario, faults=False)
    avail = [s.pv_available_kw for s in samples]
    pv = [s.pv_kw for s in samples]
    ax.plot(hours, avail, color="#f1c40f", lw=1, ls="--", label="PV available")
    ax.plot(hours, pv, color="#e67e22", lw=1.4, label="PV delivered")
    ax.fill_between(hours, pv, avail, color="#e67e22", alpha=0.3, lw=0, label="curtailed")
    ax.plot(
        hours,
        [s.battery_kw for s in samples],
        color="#239b56",
        lw=1.4,
        label="batteries (+ discharge)",
    )
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_ylabel("kW")
    soc_ax = ax.twinx()
    soc_ax.plot(hours, [s.battery_soc_pct for s in samples], color="#239b56", lw=1, ls=":")
    soc_ax.set_ylabel("battery SoC, % (dotted)", color="#239b56", fontsize=8)
    soc_ax.set_ylim(0, 100)
    ax.set_title(
        f"PV and batteries — {figs['curtailed_kwh']:.0f} kWh curtailed"
        f"  ·  {figs['battery_discharged_kwh']:.0f} kWh discharged"
        f"  ·  losses {figs['losses_kwh']:.0f} kWh",
        fontsize=10,
        loc="left",
    )
    ax.legend(loc="upper left", fontsize=8, ncol=4, framealpha=0.8)


def _devices_panel(
    ax: Axes, scenario: Scenario, samples: Sequence[Sample], figs: dict[str, Any]
) -> None:
    hours = _hours(scenario, samples)
    _shade_windows(ax, scenario, faults=True)
    missing = [len(s.devices_missing) for s in samples]
    ax.step(hours, missing, where="post", color=_FAULT_COLOUR, lw=1.4, label="devices missing")
    uncontrolled = [h for h, s in zip(hours, samples, strict=True) if not s.dispatched]
    if uncontrolled:
        ax.scatter(
            uncontrolled,
            [0] * len(uncontrolled),
            marker="x",
            s=14,
            color="black",
            zorder=3,
            label="no dispatch (no head meter / waiting)",
        )
    ax.set_ylim(-0.5, max(3, *missing) + 1.5)
    ax.set_ylabel("devices")
    ax.set_title(
        f"Devices the controller could not read — {figs['device_missed_intervals']} device-intervals"
        f" missed; faults hatched",
        fontsize=10,
        loc="left",
    )
    ax.legend(loc="center right", fontsize=8, framealpha=0.8)


_PANELS = (
    ("import.png", _import_panel, 3.0),
    ("devices.png", _devices_panel, 1.3),
    ("voltages.png", _voltage_panel, 2.5),
    ("der.png", _der_panel, 2.5),
)


DAYS_PLOT_MIN_H = 12.0
"""Runs at least this long get ``days.png``."""


def _day_lines(ax: Axes, hours: Sequence[float]) -> None:
    first, last = math.ceil(hours[0] / 24.0), math.floor(hours[-1] / 24.0)
    for d in range(max(first, 1), last + 1):
        ax.axvline(24.0 * d, color="black", lw=0.8, alpha=0.5)


def _days_figure(
    scenario: Scenario, samples: Sequence[Sample], figs: dict[str, Any], path: Path
) -> None:
    """Import vs cap, state of charge and price over the run, one row each."""
    hours = _hours(scenario, samples)
    fig: Figure
    fig, (imp, soc, price) = plt.subplots(
        3,
        1,
        figsize=(14, 9),
        sharex=True,
        layout="constrained",
        gridspec_kw={"height_ratios": [3, 2, 1.3]},
    )
    for ax in (imp, soc, price):
        _shade_windows(ax, scenario, faults=False)
        _day_lines(ax, hours)
    imp.plot(hours, [s.import_kw for s in samples], color="#1f4e79", lw=1.2, label="head import")
    caps = [s.import_limit_kw if s.import_limit_kw is not None else float("nan") for s in samples]
    if any(s.import_limit_kw is not None for s in samples):
        imp.step(hours, caps, where="post", color="#d35400", lw=2, ls="--", label="import cap")
    imp.plot(
        hours,
        [s.import_kw + s.battery_kw for s in samples],
        color="#7f8c8d",
        lw=0.9,
        ls=":",
        label="import without the batteries",
    )
    imp.set_ylabel("kW (+ import)")
    parts = []
    for day in figs.get("days", []):
        c = day["dr_compliance"]
        if c is not None:
            parts.append(
                f"{day['day']}: {100 * c:.1f}% ({day['energy_over_limit_kwh']:.0f} kWh over)"
            )
    imp.set_title(
        "Head import against the cap — " + ("  ·  ".join(parts) if parts else "no DR event"),
        fontsize=10,
        loc="left",
    )
    imp.legend(loc="upper left", fontsize=8, ncol=3, framealpha=0.8)
    soc.plot(hours, [s.battery_soc_pct for s in samples], color="#239b56", lw=1.4)
    for event in figs.get("events", []):
        h = scenario.start_hour + event["start_s"] / 3600.0
        soc.scatter([h], [event["soc_at_start_pct"]], color=_FAULT_COLOUR, zorder=3, s=18)
        soc.annotate(
            f"{event['soc_at_start_pct']:.0f}% at the event's start",
            xy=(h, event["soc_at_start_pct"]),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=8,
        )
    soc.set_ylim(0, 100)
    soc.set_ylabel("battery SoC, %")
    soc.set_title("Batteries' state of charge (fleet mean)", fontsize=10, loc="left")
    if any(s.price_per_kwh is not None for s in samples):
        prices = [s.price_per_kwh if s.price_per_kwh is not None else float("nan") for s in samples]
        price.step(hours, prices, where="post", color="#6c3483", lw=1.4, label="import price")
        cost = figs.get("energy_cost")
        price.set_title(
            "Tariff" + (f" — energy cost {cost:,.0f}" if cost is not None else ""),
            fontsize=10,
            loc="left",
        )
    else:
        price.set_title("No tariff", fontsize=10, loc="left")
    price.set_ylabel("per kWh")
    for ax in (imp, soc, price):
        _clock_axis(ax, hours[-1] - hours[0])
    fig.suptitle(f"{scenario.name}: {scenario.description}".rstrip(": "), fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_run(
    scenario: Scenario,
    samples: Sequence[Sample],
    out_dir: Path,
    *,
    v_band_pu: tuple[float, float],
) -> list[Path]:
    """Write the run's PNGs into ``out_dir`` and return their paths; ``v_band_pu`` is the
    voltage band the run is graded against."""
    if not samples:
        return []
    figs = kpis(
        samples,
        interval_s=scenario.interval_s,
        v_min_pu=v_band_pu[0],
        v_max_pu=v_band_pu[1],
        start=scenario.start_local,
    )
    span_h = (samples[-1].t_s - samples[0].t_s) / 3600.0
    paths: list[Path] = []
    fig: Figure
    fig, axes = plt.subplots(
        len(_PANELS),
        1,
        figsize=(12, 12),
        sharex=True,
        layout="constrained",
        gridspec_kw={"height_ratios": [h for _n, _d, h in _PANELS]},
    )
    for ax, (_name, draw, _h) in zip(axes, _PANELS, strict=True):
        draw(ax, scenario, samples, figs)
        _clock_axis(ax, span_h)
    fig.suptitle(f"{scenario.name}: {scenario.description}".rstrip(": "), fontsize=11)
    path = out_dir / "overview.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    for name, draw, height in _PANELS:
        fig, ax = plt.subplots(figsize=(12, 1.4 * height + 1), layout="constrained")
        draw(ax, scenario, samples, figs)
        _clock_axis(ax, span_h)
        path = out_dir / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    if span_h >= DAYS_PLOT_MIN_H or any(s.price_per_kwh is not None for s in samples):
        path = out_dir / "days.png"
        _days_figure(scenario, samples, figs, path)
        paths.append(path)
    return paths
