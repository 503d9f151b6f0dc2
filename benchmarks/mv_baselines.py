"""Issue 16's M&V figures: each baseline graded against the counterfactual the real world never
shows.

The bundled ``mv_fortnight`` scenario (two weeks of ordinary days on the varied HIL feeder, each
day its own load and sky, one price all day; then an evening import cap on the last Monday,
announced at noon; half-hour intervals) runs twice through the same runner as ``feederd sim``
(the real daemon against the rig over Modbus, in simulated time): as written, and without its
event, all else alike (``controller.commands.rig.counterfactual``). The baselines are computed
as a settlement would, from the head import the daemon journaled in the run with the event
(``optimizer.baselines``: "10 of 10" with its same-day adjustment capped at ±20 %, the same
unadjusted, "meter before / meter after", and "meter before" alone as it stands when the event
ends); each is graded against the physics' head import in the run without the event over the
event's intervals (``hil.counterfactual``), never against the controller's own estimates:

- the baseline's error per interval (baseline − counterfactual): mean absolute (kW and % of the
  counterfactual's mean), RMSE, bias;
- delivered kWh (baseline − meter) and its error against the true delivered energy
  (counterfactual physics − actual physics); requested kWh (``import_limit``:
  ``max(0, baseline − limit)``) and the performance ratio, and its error against the true ratio.

It also says where the two runs first differ (they must be the same run until the
announcement), and the same-day adjustment "10 of 10" would have made on the run without the
event (what the controller's preparing for the event does to the adjustment window), and
what ``feederd report`` says (``controller.performance.assess`` on the same journal) against
the truth. Prints one JSON object, then Markdown tables.

    .venv/bin/python benchmarks/mv_baselines.py [--scenario PATH] [--out DIR]

``--out`` keeps both runs' journals in DIR (``actual.sqlite``, ``counterfactual.sqlite``), each
run's ``intervals.csv``, ``kpis.json`` and plots in ``DIR/with_event`` and
``DIR/without_event``, and the figures in ``DIR/mv_baselines.json`` (default: the journals in
a temporary folder, removed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from controller.commands.rig.counterfactual import Counterfactual, journal_meter, run_counterfactual
from controller.commands.rig.scenario import write_results
from controller.journal import Journal
from controller.logs import configure_logging
from controller.performance import MvSettings, assess
from hil.counterfactual import Grade, Truth, first_difference_s, grade, truth
from hil.scenario import bundled_scenario, load_scenario
from optimizer.baselines import Baseline, meter_before_after, ten_of_ten

SCENARIO = "mv_fortnight"


def baselines(
    meter: pd.Series, start: datetime, end: datetime, *, tz: str, excluded: set[date]
) -> dict[str, Baseline]:
    """Each method's baseline of the event ``[start, end)`` from the journaled ``meter``."""
    before_only = meter[meter.index < pd.Timestamp(end)]
    return {
        "10of10 (adjusted, cap 20%)": ten_of_ten(meter, start, end, tz=tz, excluded_days=excluded),
        "10of10 unadjusted": ten_of_ten(
            meter, start, end, tz=tz, excluded_days=excluded, adjustment_cap=0.0
        ),
        "meter before/after": meter_before_after(meter, start, end),
        "meter before only": meter_before_after(before_only, start, end),
    }


def figures(runs: Counterfactual) -> dict[str, Any]:
    """The figures of one counterfactual pair (see the module docstring)."""
    scenario = runs.actual.scenario
    spec = scenario.dr[0]
    ident = spec.id or "sim-1"
    stored = next(s for s in runs.events if s.event.id == ident)
    event = stored.event
    kind = event.type.value
    excluded = {s.event.start.astimezone(scenario.zone).date() for s in runs.events}
    t = truth(
        runs.actual.samples,
        runs.counterfactual.samples,
        start_utc=scenario.start_utc,
        event_start=event.start,
        event_end=event.end,
        interval_s=runs.interval_s,
        import_limit_kw=event.kw if kind == "import_limit" else None,
        reduce_by_kw=event.kw if kind == "reduce_by" else None,
    )
    made = baselines(runs.meter_kw, event.start, event.end, tz=scenario.timezone, excluded=excluded)
    grades = [grade(name, b.kw, runs.meter_kw, t) for name, b in made.items()]
    cf_meter, _ = journal_meter(runs.journals[1])
    cf_ten = ten_of_ten(cf_meter, event.start, event.end, tz=scenario.timezone)
    diverge = first_difference_s(runs.actual.samples, runs.counterfactual.samples)
    return {
        "scenario": scenario.name,
        "interval_s": runs.interval_s,
        "event": {
            "id": event.id,
            "type": kind,
            "kw": event.kw,
            "start": event.start.astimezone(scenario.zone).isoformat(),
            "end": event.end.astimezone(scenario.zone).isoformat(),
            "announced_s": spec.announced_at_s,
        },
        "runs_first_differ_s": diverge,
        "runs_first_differ_local": (
            None if diverge is None else scenario.local_time(diverge).isoformat()
        ),
        "identical_before_announcement": diverge is None or diverge >= spec.announced_at_s,
        "truth": _truth(t),
        "baselines": {
            name: {
                **_grade(g),
                "days_used": [d.isoformat() for d in made[name].days_used],
                "adjustment": made[name].adjustment,
                "note": made[name].note,
            }
            for name, g in zip(made, grades, strict=True)
        },
        "adjustment_without_the_event": cf_ten.adjustment,
        "report": _report(runs, event.id, t),
        "wall_s": {
            "with_event": round(runs.actual.wall_s, 1),
            "without_event": round(runs.counterfactual.wall_s, 1),
        },
    }


def _report(runs: Counterfactual, event_id: str, t: Truth) -> dict[str, Any]:
    """What ``feederd report`` says the event delivered (``controller.performance.assess`` on
    the journal of the run with the event, at the run's end), beside the truth."""
    scenario = runs.actual.scenario
    journal = Journal(runs.journals[0])
    try:
        done = scenario.start_utc + timedelta(seconds=scenario.duration_s)
        perf = assess(journal, event_id, settings=MvSettings(timezone=scenario.timezone), now=done)
    finally:
        journal.close()
    out: dict[str, Any] = {}
    for s in perf.summary:
        delivered, ratio = s.delivered_kwh, s.performance_ratio
        out[s.baseline] = {
            "delivered_kwh": None if delivered is None else round(delivered, 1),
            "delivered_error_kwh": None
            if delivered is None
            else round(delivered - t.delivered_kwh, 1),
            "requested_kwh": None if s.requested_kwh is None else round(s.requested_kwh, 1),
            "ratio": None if ratio is None else round(ratio, 3),
            "ratio_error": None if ratio is None or t.ratio is None else round(ratio - t.ratio, 3),
            "days_used": len(s.days_used),
            "adjustment": s.adjustment,
            "note": s.note,
        }
    return out


def _truth(t: Truth) -> dict[str, Any]:
    return {
        "intervals": len(t.counterfactual_kw),
        "counterfactual_mean_kw": round(float(t.counterfactual_kw.mean()), 1),
        "counterfactual_max_kw": round(float(t.counterfactual_kw.max()), 1),
        "actual_mean_kw": round(float(t.actual_kw.mean()), 1),
        "actual_max_kw": round(float(t.actual_kw.max()), 1),
        "delivered_kwh": round(t.delivered_kwh, 1),
        "requested_kwh": round(t.requested_kwh, 1),
        "ratio": None if t.ratio is None else round(t.ratio, 3),
    }


def _grade(g: Grade) -> dict[str, Any]:
    def r(x: float | None, n: int = 1) -> float | None:
        return None if x is None else round(x, n)

    return {
        "intervals": g.intervals,
        "mean_abs_error_kw": r(g.mean_abs_error_kw),
        "mean_abs_error_pct": r(g.mean_abs_error_pct, 2),
        "rmse_kw": r(g.rmse_kw),
        "bias_kw": r(g.bias_kw),
        "bias_pct": r(g.bias_pct, 2),
        "delivered_kwh": r(g.delivered_kwh),
        "delivered_error_kwh": r(g.delivered_error_kwh),
        "delivered_error_pct": r(g.delivered_error_pct),
        "requested_kwh": r(g.requested_kwh),
        "ratio": r(g.ratio, 3),
        "ratio_error": r(g.ratio_error, 3),
    }


def _num(x: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "n/a" if x is None else format(x, spec) + unit


def tables(fig: dict[str, Any]) -> list[str]:
    ev, tr = fig["event"], fig["truth"]
    lines = [
        f"Event {ev['id']}: {ev['type']} {ev['kw']:g} kW, {ev['start']} .. {ev['end']}"
        f" ({tr['intervals']} intervals of {fig['interval_s'] / 60:g} min)",
        "",
        "| truth (physics) | counterfactual mean / max kW | with the event mean / max kW"
        " | delivered kWh | requested kWh | ratio |",
        "|---|---|---|---|---|---|",
        f"| run without the event − run with it | {tr['counterfactual_mean_kw']:.0f}"
        f" / {tr['counterfactual_max_kw']:.0f} | {tr['actual_mean_kw']:.0f}"
        f" / {tr['actual_max_kw']:.0f} | {tr['delivered_kwh']:.1f}"
        f" | {tr['requested_kwh']:.1f} | {_num(tr['ratio'], '.3f')} |",
        "",
        "| baseline | mean abs error kW (%) | RMSE kW | bias kW (%) | delivered kWh"
        " | delivered error kWh (%) | requested kWh | ratio | ratio error | days, adjustment |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, g in fig["baselines"].items():
        days = f"{len(g['days_used'])} days" if g["days_used"] else "-"
        adj = f", x{g['adjustment']:.3f}" if g["adjustment"] is not None else ""
        lines.append(
            f"| {name} | {g['mean_abs_error_kw']:.1f} ({g['mean_abs_error_pct']:.1f}%)"
            f" | {g['rmse_kw']:.1f} | {g['bias_kw']:+.1f} ({g['bias_pct']:+.1f}%)"
            f" | {g['delivered_kwh']:.1f}"
            f" | {g['delivered_error_kwh']:+.1f} ({_num(g['delivered_error_pct'], '+.1f', '%')})"
            f" | {g['requested_kwh']:.1f} | {_num(g['ratio'], '.3f')}"
            f" | {_num(g['ratio_error'], '+.3f')} | {days}{adj} |"
        )
    lines += [
        "",
        "What `feederd report` says (controller.performance on the journal), against the truth:",
        "",
        "| report's baseline | delivered kWh | error kWh | requested kWh | ratio | ratio error |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in fig["report"].items():
        lines.append(
            f"| {name} | {_num(r['delivered_kwh'])} | {_num(r['delivered_error_kwh'], '+.1f')}"
            f" | {_num(r['requested_kwh'])} | {_num(r['ratio'], '.3f')}"
            f" | {_num(r['ratio_error'], '+.3f')} |"
        )
    first = fig["runs_first_differ_local"] or "never"
    lines += [
        "",
        f"The two runs first differ at {first} (announced at scenario second"
        f" {ev['announced_s']:g}): identical before the announcement:"
        f" {'yes' if fig['identical_before_announcement'] else 'NO'}.",
        "10of10's same-day adjustment on the run without the event:"
        f" {_num(fig['adjustment_without_the_event'], '.3f')}.",
        f"Wall time: {fig['wall_s']['with_event']:.0f} s with the event,"
        f" {fig['wall_s']['without_event']:.0f} s without.",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", type=Path, default=None, help="a scenario with one event")
    parser.add_argument("--out", type=Path, default=None, help="keep the journals and runs here")
    args = parser.parse_args(argv)
    configure_logging(level="error", stream=sys.stderr)
    path = args.scenario or bundled_scenario(SCENARIO)
    scenario = load_scenario(path)
    with tempfile.TemporaryDirectory(prefix="mv-baselines-") as scratch:
        journals = args.out or Path(scratch)
        started = time.perf_counter()
        runs = asyncio.run(
            run_counterfactual(
                scenario, journal_dir=journals, base_dir=path.parent, source=str(path)
            )
        )
        fig = figures(runs)
    fig["wall_s"]["total"] = round(time.perf_counter() - started, 1)
    if args.out is not None:
        write_results(runs.actual, args.out / "with_event")
        write_results(runs.counterfactual, args.out / "without_event")
        (args.out / "mv_baselines.json").write_text(json.dumps(fig, indent=2) + "\n")
    print(json.dumps(fig, indent=2))
    print()
    print("\n".join(tables(fig)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
