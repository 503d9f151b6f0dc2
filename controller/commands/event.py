"""``feederd event add|list|cancel``: DR events from the command line.

The event goes through the same validation as an MQTT one and into the journal the daemon
reads (``--journal PATH``, or the config's ``journal.path``); the running daemon applies it at
its next interval and publishes it on ``dr/status``. A rejected event exits 2 with its reason.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from controller.commands.args import number

HELP = "add, list or cancel DR events (stored in the daemon's journal)"


def _journal_args(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="feederd.toml (its journal.path is used)")
    where.add_argument("--journal", help="the journal file")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, parser_class=type(parser))
    add = sub.add_parser("add", help="add (or replace) an event")
    _journal_args(add)
    add.add_argument("--id", required=True)
    add.add_argument("--type", required=True, choices=["import_limit", "export_limit", "reduce_by"])
    add.add_argument("--kw", required=True, type=number)
    add.add_argument("--start", default=None, help="RFC 3339 (default now)")
    add.add_argument("--end", required=True, help="RFC 3339, e.g. 2026-07-01T18:00:00Z")
    add.add_argument("--priority", type=int, default=0)
    lst = sub.add_parser("list", help="list the events not yet over")
    _journal_args(lst)
    lst.add_argument("--all", action="store_true", help="also ended and cancelled events")
    cancel = sub.add_parser("cancel", help="cancel an event")
    _journal_args(cancel)
    cancel.add_argument("--id", required=True)


def run(args: argparse.Namespace) -> int:
    import sqlite3  # noqa: PLC0415
    from datetime import timedelta  # noqa: PLC0415

    from controller.cli import UsageError  # noqa: PLC0415
    from controller.clock import SystemClock  # noqa: PLC0415
    from controller.config import load_config  # noqa: PLC0415
    from controller.dr.events import EventBounds  # noqa: PLC0415
    from controller.dr.service import DrService  # noqa: PLC0415
    from controller.journal import Journal, JournalError  # noqa: PLC0415
    from controller.logs import configure_logging  # noqa: PLC0415

    # the decision is the output, on one line (a rejection, a journal that cannot be
    # written: exit 2); the service's own log lines would repeat it
    configure_logging(level="critical")
    bounds = EventBounds()
    max_events = 1000
    if args.journal:
        path, retention, site = args.journal, 30, "-"
    else:
        loaded = load_config(args.config)
        cfg = loaded.config
        if loaded.journal_path is None:
            raise UsageError(f"{args.config}: journal.path: the config has no journal")
        path, retention, site = str(loaded.journal_path), cfg.journal.retention_days, cfg.site
        # the bounds the daemon applies to an event from MQTT
        bounds = EventBounds(
            max_kw=loaded.max_event_kw, horizon=timedelta(days=cfg.dr.horizon_days)
        )
        max_events = cfg.dr.max_events
    clock = SystemClock()
    try:
        journal = Journal(path, retention_days=retention)
        try:
            service = DrService(
                journal,
                clock=clock,
                site=site,
                default_import_kw=None,
                default_export_kw=None,
                bounds=bounds,
                max_events=max_events,
            )
            if args.action == "list":
                return _list(journal, clock.now(), show_all=args.all)
            payload: dict[str, Any]
            if args.action == "cancel":
                payload = {"id": args.id, "cancel": True}
            else:
                payload = {
                    "id": args.id,
                    "type": args.type,
                    "kw": args.kw,
                    "start": args.start or clock.now().isoformat(),
                    "end": args.end,
                    "priority": args.priority,
                }
            decision = service.submit(payload, source="cli")
        finally:
            journal.close()
    except (JournalError, sqlite3.Error, OSError, ValueError) as err:
        # a full disk, a read-only file or folder, a file that is not a journal: one line
        raise UsageError(f"journal {path}: cannot {_WHAT[args.action]}: {_reason(err)}") from None
    if decision.result == "rejected":
        raise UsageError(f"event {decision.id or '?'} rejected: {decision.reason}")
    print(f"{decision.result} {decision.id}")
    return 0


_WHAT = {"add": "add the event", "cancel": "cancel the event", "list": "list the events"}


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return " ".join(str(err).split()) or type(err).__name__


def _list(journal: Any, now: datetime, *, show_all: bool) -> int:
    rows = [s for s in journal.events() if show_all or (s.live and s.event.end > now)]
    print(
        f"{'id':<20} {'type':<13} {'kw':>8} {'prio':>4}  {'start (UTC)':<20} {'end (UTC)':<20} state"
    )
    for s in rows:
        e = s.event
        state = (
            "cancelled"
            if not s.live
            else "active"
            if e.active_at(now)
            else "ended"
            if e.end <= now
            else "pending"
        )
        print(
            f"{e.id:<20} {e.type.value:<13} {e.kw:>8g} {e.priority:>4}  "
            f"{_utc(e.start):<20} {_utc(e.end):<20} {state}"
        )
    return 0


def _utc(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
