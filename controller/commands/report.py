"""``feederd report``: a period of the journal as a table, a CSV and PNG plots; the last plan
hour by hour and the forecasts' error; ``--json`` prints all of it as one JSON document.

It reads the journal alone, so it runs beside the daemon (SQLite in WAL mode: readers never
wait for the writer, nor it for them).
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

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
        " error as one JSON document",
    )


def run(args: argparse.Namespace) -> int:
    from controller.cli import UsageError  # noqa: PLC0415
    from controller.config import load_config  # noqa: PLC0415
    from controller.journal import Journal, JournalError  # noqa: PLC0415
    from controller.plan import Plan, PlanError  # noqa: PLC0415
    from controller.report import frame, plots, summary  # noqa: PLC0415

    path = args.journal
    if path is None:
        configured = load_config(args.config).journal_path
        if configured is None:
            raise UsageError(f"{args.config}: journal.path: the config has no journal")
        path = str(configured)
    if not Path(path).is_file():
        raise UsageError(f"{path}: no such journal file")
    try:
        journal = Journal(path)
    except (JournalError, OSError) as err:
        raise UsageError(str(err)) from None
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
