"""``feederd report``: a period of the journal as a table, a CSV and PNG plots."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

HELP = "a period of the journal as a table and PNG plots"


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


def run(args: argparse.Namespace) -> int:
    from controller.cli import UsageError  # noqa: PLC0415
    from controller.config import load_config  # noqa: PLC0415
    from controller.journal import Journal, JournalError  # noqa: PLC0415
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
    finally:
        journal.close()
    if not records:
        raise UsageError(f"{path}: no intervals in the period")
    df = frame(records)
    print(summary(df).to_string())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(out / "intervals.csv")
        for p in plots(df, out):
            print(f"wrote {p}")
        print(f"wrote {out / 'intervals.csv'}")
    return 0
