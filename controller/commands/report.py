"""``feederd report``: a period of the journal as a table, a CSV and PNG plots; the last plan
hour by hour and the forecasts' error; ``--json`` prints all of it as one JSON document.

``feederd report --event ID [--csv PATH] [--plot PATH]``: what one DR event delivered against
each M&V baseline (``controller.performance``, with the config's ``[mv]`` table, or its defaults
with ``--journal``): the summary, then interval by interval; the CSV holds the intervals, the
plot the baselines, the measured import and the limit.

It reads the journal alone, so it runs beside the daemon (SQLite in WAL mode: readers never
wait for the writer, nor it for them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from controller.performance import EventPerformance
    from controller.plan import Plan

HELP = "a period of the journal as a table and PNG plots, and the last plan"
NO_PLAN = (
    "no plan yet: the journal holds none (the daemon stores one once an interval has dispatched)"
)


def _when(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="feederd.toml (its journal.path is used)")
    where.add_argument("--journal", help="the journal file")
    parser.add_argument("--from", dest="since", type=_when, default=None, help="RFC 3339 start")
    parser.add_argument("--to", dest="until", type=_when, default=None, help="RFC 3339 end")
    parser.add_argument("--out", default=None, help="directory for intervals.csv and PNG plots")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the summary, the last plan (hour by hour and as stored) and the forecast"
        " error as one JSON document (with --event: the event's assessment)",
    )
    parser.add_argument(
        "--event", default=None, help="what this DR event delivered against each M&V baseline"
    )
    parser.add_argument("--csv", default=None, help="with --event: the intervals as CSV")
    parser.add_argument("--plot", default=None, help="with --event: a PNG of the baselines")
    parser.add_argument(
        "--timezone",
        default=None,
        help="with --event: the baselines' local time (default: the config's [mv] or"
        " [forecast] timezone, or UTC with --journal)",
    )


def run(args: argparse.Namespace) -> int:
    from controller.cli import UsageError  # noqa: PLC0415
    from controller.config import load_config  # noqa: PLC0415
    from controller.journal import Journal, JournalError  # noqa: PLC0415
    from controller.plan import Plan, PlanError  # noqa: PLC0415
    from controller.report import frame, plots, summary  # noqa: PLC0415

    if args.event is None and (args.csv or args.plot or args.timezone):
        raise UsageError("--csv, --plot and --timezone go with --event")
    path = args.journal
    loaded = None
    if path is None:
        loaded = load_config(args.config)
        configured = loaded.journal_path
        if configured is None:
            raise UsageError(f"{args.config}: journal.path: the config has no journal")
        path = str(configured)
    if not Path(path).is_file():
        raise UsageError(f"{path}: no such journal file")
    try:
        journal = Journal(path)
    except (JournalError, OSError) as err:
        raise UsageError(str(err)) from None
    if args.event is not None:
        try:
            return _event(args, journal, None if loaded is None else loaded.config)
        finally:
            journal.close()
    try:
        since = args.since.astimezone(UTC) if args.since else None
        until = args.until.astimezone(UTC) if args.until else None
        if since and until and until <= since:
            raise UsageError("--to must be after --from")
        records = journal.intervals(since, until + timedelta(microseconds=1) if until else None)
        doc = journal.last_plan()
    finally:
        journal.close()
    if not records:
        raise UsageError(f"{path}: no intervals in the period")
    plan: Plan | None = None
    unreadable = None
    if doc is not None:
        try:
            plan = Plan.from_json(doc)
        except PlanError as err:
            unreadable = f"the stored plan cannot be read: {err}"
    df = frame(records)
    table = summary(df)
    if args.json:
        print(json.dumps(_document(table, plan, doc, unreadable), default=str, allow_nan=False))
    else:
        print(table.to_string())
        print()
        _print_plan(plan, unreadable)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(out / "intervals.csv")
        for p in plots(df, out):
            print(f"wrote {p}")
        print(f"wrote {out / 'intervals.csv'}")
    return 0


def _rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """A table's rows for JSON (NaN as null)."""
    return [
        {str(k): (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in df.to_dict(orient="records")
    ]


def _document(
    table: pd.DataFrame, plan: Plan | None, doc: dict[str, Any] | None, unreadable: str | None
) -> dict[str, Any]:
    from controller.report import forecast_error_table, plan_table  # noqa: PLC0415

    value = table["value"]
    return {
        "summary": {str(k): (v.item() if hasattr(v, "item") else v) for k, v in value.items()},
        "plan": None if plan is None else doc,
        "plan_hourly": [] if plan is None else _rows(plan_table(plan)),
        "plan_note": unreadable or (NO_PLAN if plan is None else None),
        "forecast_errors": [] if plan is None else _rows(forecast_error_table(plan)),
    }


def _print_plan(plan: Plan | None, unreadable: str | None) -> None:
    from controller.report import event_table, forecast_error_table, plan_table  # noqa: PLC0415

    if plan is None:
        print(unreadable or NO_PLAN)
        return
    print(
        f"plan made {plan.at:%Y-%m-%d %H:%M:%S} UTC, {len(plan.steps)} steps to"
        f" {plan.end:%Y-%m-%d %H:%M} UTC; largest shortfall {plan.max_shortfall_kw:.1f} kW"
    )
    print(plan_table(plan).to_string(index=False, na_rep="-"))
    events = event_table(plan)
    if not events.empty:
        print()
        print("DR events ahead (shortfall the plan predicts; - : beyond the plan)")
        print(events.to_string(index=False, na_rep="-"))
    print()
    errors = forecast_error_table(plan)
    if errors.empty or not errors["samples"].any():
        print("forecast error: none measured yet (a forecast is scored once its time has come)")
    else:
        print("forecast error (forecasts against what was measured)")
        print(errors.to_string(index=False, na_rep="-"))


def _event(args: argparse.Namespace, journal: Any, config: Any) -> int:
    """``--event``: assess the event from the journal now, print it, write the CSV and plot."""
    import zoneinfo  # noqa: PLC0415

    from controller.cli import UsageError  # noqa: PLC0415
    from controller.performance import MvSettings, UnknownEvent, assess  # noqa: PLC0415
    from controller.report import (  # noqa: PLC0415
        performance_intervals,
        performance_plot,
        performance_table,
    )

    settings = MvSettings() if config is None else MvSettings.from_config(config)
    if args.timezone is not None:
        try:
            zoneinfo.ZoneInfo(args.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise UsageError(f"--timezone: unknown time zone {args.timezone!r}") from None
        settings = dataclasses.replace(settings, timezone=args.timezone)
    try:
        perf = assess(journal, args.event, settings=settings, now=datetime.now(UTC))
    except UnknownEvent:
        raise UsageError(f"{journal.path}: no DR event {args.event!r} in the journal") from None
    table = performance_table(perf)
    intervals = performance_intervals(perf)
    if args.json:
        print(json.dumps(_event_document(perf, table, intervals), default=str, allow_nan=False))
    else:
        _print_event(perf, settings.timezone, table, intervals)
    if args.csv:
        csv = Path(args.csv)
        csv.parent.mkdir(parents=True, exist_ok=True)
        intervals.to_csv(csv)
        print(f"wrote {csv}", file=sys.stderr if args.json else sys.stdout)
    if args.plot:
        png = performance_plot(perf, Path(args.plot))
        print(f"wrote {png}", file=sys.stderr if args.json else sys.stdout)
    return 0


_FORMATS = {
    "delivered kWh": "{:.1f}",
    "requested kWh": "{:.1f}",
    "ratio": "{:.3f}",
    "days": "{:.0f}",
    "adjustment": "{:.3f}",
}
"""How the summary's numbers are printed (NaN: ``-``)."""


def _event_header(perf: EventPerformance) -> str:
    e = perf.event.event
    return (
        f"DR event {e.id}: {e.type.value} {e.kw:g} kW, {perf.start:%Y-%m-%d %H:%M:%S} .."
        f" {perf.end:%Y-%m-%d %H:%M:%S} UTC, from {perf.event.source}"
    )


def _print_event(
    perf: EventPerformance, tz: str, table: pd.DataFrame, intervals: pd.DataFrame
) -> None:
    print(_event_header(perf))
    if perf.note:
        print(f"note: {perf.note}")
    print(f"baselines in local time {tz}; delivered = baseline - measured")
    print()
    shown = table.copy()
    for column, fmt in _FORMATS.items():
        shown[column] = [("-" if math.isnan(v) else fmt.format(v)) for v in table[column]]
    print(shown.set_index("baseline").to_string())
    print()
    if intervals.empty:
        print("no interval measured during the event")
        return
    print("interval by interval (kW; per baseline: the baseline, delivered, requested)")
    per = intervals.rename(columns=_short)
    per.index = [f"{t:%Y-%m-%d %H:%M:%S}" for t in per.index]
    per.index.name = "UTC"
    print(per.to_string(na_rep="-", float_format=lambda x: f"{x:.1f}"))


def _short(column: str) -> str:
    """A per-interval column's printed name: ``delivered_kw_10of10`` -> ``10of10 delivered``."""
    for part, label in (("baseline_kw_", ""), ("delivered_kw_", " delivered")):
        if column.startswith(part):
            return column.removeprefix(part).replace("meter_before_after", "MB/MA") + label
    if column.startswith("requested_kw_"):
        return column.removeprefix("requested_kw_").replace("meter_before_after", "MB/MA") + (
            " requested"
        )
    return {"measured_kw": "measured", "limit_kw": "limit"}.get(column, column)


def _event_document(
    perf: EventPerformance, table: pd.DataFrame, intervals: pd.DataFrame
) -> dict[str, Any]:
    stored = perf.event
    cancelled = stored.cancelled_at
    rows = intervals.reset_index()
    rows["time (UTC)"] = [t.isoformat() for t in rows["time (UTC)"]]
    return {
        "event": {
            **stored.event.to_json(),
            "source": stored.source,
            "cancelled_at": None if cancelled is None else cancelled.isoformat(),
        },
        "start": perf.start.isoformat(),
        "end": perf.end.isoformat(),
        "note": perf.note,
        "baselines": [
            {
                **row,
                "days_used": [d.isoformat() for d in s.days_used],
                "note": s.note,
            }
            for row, s in zip(_rows(table), perf.summary, strict=True)
        ],
        "intervals": _rows(rows),
    }
