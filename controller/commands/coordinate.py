"""``feederd coordinate``: the fleet coordinator (README "Fleet coordinator").

- ``feederd coordinate --config fleet.toml``: the daemon, as systemd runs it (``Type=notify``:
  ``READY=1`` once serving, ``WATCHDOG=1`` after every completed tick, SIGHUP reloads through
  the same validation as ``check``, SIGTERM/SIGINT stop);
- ``check``: validates ``fleet.toml`` (and the secrets it names) and prints the fleet;
- ``status [--json]``: the fleet now, from the coordinator's journal (opened read-only) and its
  metrics endpoint if it answers, without disturbing the running daemon;
- ``target add|cancel|list``: system targets into the journal, through the same validation as
  one from MQTT; the running coordinator takes them up at its next tick.

Every user error (a bad config, a rejected target, a journal that cannot be read) is one line
and exit 2.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from controller.commands.args import number

if TYPE_CHECKING:
    from coordinator.config import FleetConfig

HELP = "the fleet coordinator: split system targets among feeders (run, check, status, target)"

METRICS_TIMEOUT_S = 1.0
"""How long ``status`` waits for the running coordinator's metrics endpoint."""
_METRICS_MAX_BYTES = 4 * 1024 * 1024


def _config_arg(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    # on the command and on each action, so both `coordinate --config F check` and
    # `coordinate check --config F` read; an action's absent option leaves the command's
    p.add_argument(
        "--config",
        help="fleet.toml",
        default=None if top else argparse.SUPPRESS,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _config_arg(parser, top=True)
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    sub = parser.add_subparsers(dest="action", required=False, parser_class=type(parser))
    check = sub.add_parser("check", help="validate fleet.toml and print the fleet")
    _config_arg(check)
    status = sub.add_parser("status", help="the fleet now: feeders, shares, targets")
    _config_arg(status)
    status.add_argument("--json", action="store_true", help="one JSON document")
    target = sub.add_parser("target", help="add, cancel or list system targets")
    tsub = target.add_subparsers(dest="target_action", required=True, parser_class=type(parser))
    add = tsub.add_parser("add", help="add (or replace) a system target")
    _config_arg(add)
    add.add_argument("--id", required=True, help="[A-Za-z0-9_.:-]{1,64}")
    add.add_argument("--group", default="all", help="a group of fleet.toml, or 'all'")
    add.add_argument("--type", required=True, choices=["reduce_by", "import_limit"])
    add.add_argument("--kw", required=True, type=number)
    add.add_argument("--start", default=None, help="RFC 3339 (default now)")
    add.add_argument("--end", required=True, help="RFC 3339, e.g. 2026-07-01T18:00:00Z")
    add.add_argument("--priority", type=int, default=0)
    cancel = tsub.add_parser("cancel", help="cancel a system target")
    _config_arg(cancel)
    cancel.add_argument("--id", required=True)
    lst = tsub.add_parser("list", help="the targets not yet over, and the last decisions")
    _config_arg(lst)
    lst.add_argument("--all", action="store_true", help="also ended targets (kept a while)")
    lst.add_argument("--json", action="store_true", help="one JSON document")


def run(args: argparse.Namespace) -> int:
    from controller.cli import UsageError  # noqa: PLC0415
    from coordinator.config import load_fleet  # noqa: PLC0415

    if not args.config:
        raise UsageError("coordinate: --config fleet.toml is required")
    action = args.action
    if action is None:
        return _daemon(args)
    loaded = load_fleet(args.config)
    if action == "check":
        return _check(loaded)
    if action == "status":
        return _status(loaded, as_json=args.json)
    return _target(loaded, args)


def _daemon(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from controller.logs import configure_logging  # noqa: PLC0415
    from coordinator.config import load_fleet  # noqa: PLC0415
    from coordinator.daemon import serve  # noqa: PLC0415

    # the validation of `check`, and here a systemd credential must be there
    loaded = load_fleet(args.config, require_credentials=True)
    loaded.mqtt_settings()  # the password read and TLS loaded: refused before anything runs
    configure_logging(level=args.log_level)
    asyncio.run(serve(loaded, Path(args.config)))
    return 0


# -- check ---------------------------------------------------------------------------------


def _check(loaded: FleetConfig) -> int:
    f = loaded.fleet
    m = loaded.mqtt
    print(f"fleet {f.name}: {len(f.feeders)} feeders, mode {f.mode}, interval {f.interval_s:g} s")
    for feeder in f.feeders:
        on = f" on {feeder.transformer}" if feeder.transformer else ""
        print(f"  feeder {feeder.site:<24} rating {feeder.rating_kw:>10.1f} kW{on}")
    for t in f.transformers:
        fed = [x.site for x in f.feeders if x.transformer == t.name]
        total = sum(x.rating_kw for x in f.feeders if x.transformer == t.name)
        print(
            f"  transformer {t.name:<19} rating {t.rating_kw:>10.1f} kW, "
            f"feeds {len(fed)} ({total:.1f} kW of feeder ratings)"
        )
    for group, members in sorted(f.groups.items()):
        print(f"  group {group:<25} {len(members)} feeders: {_short_list(members)}")
    print("  group all                       every feeder")
    print(f"broker {'mqtts' if m.tls else 'mqtt'}://{m.host}:{m.port} as {loaded.client_id}")
    print(f"  reads  {f.flex_filter} (QoS 1)")
    print(f"  reads  {f.dr_status_filter}, {f.online_filter} (QoS 1)")
    print(f"  reads  {f.target_topic} (QoS 1): system targets")
    print(f"  writes {f.event_topic('<site>')} (QoS 1): the per-feeder DR events")
    print(f"  writes {f.target_status_topic}, {f.status_topic} (retained)")
    print(f"  will   {f.topic_root}/online = false (retained)")
    print(f"journal {loaded.journal_path} (kept {loaded.retention_days} days)")
    mt = loaded.metrics
    print(f"metrics {f'http://{mt.address}:{mt.port}/metrics' if mt.enabled else 'off'}")
    o = loaded.openadr
    if o.enabled:
        print(
            f"openadr VEN {o.ven_name} -> {o.vtn_url}: the VTN's events become targets for "
            f"group {o.group} (priority {o.priority})"
        )
    for note in loaded.notes:
        print(f"note: {note}")
    return 0


def _short_list(items: tuple[str, ...], most: int = 6) -> str:
    head = ", ".join(items[:most])
    return head + (f", ... (+{len(items) - most})" if len(items) > most else "")


# -- the journal ---------------------------------------------------------------------------


def _open_journal(loaded: FleetConfig, *, read_only: bool, what: str) -> Any:
    from controller.cli import UsageError  # noqa: PLC0415
    from coordinator.journal import FleetJournal, JournalUnavailable  # noqa: PLC0415

    path = loaded.journal_path
    if read_only and not path.exists():
        raise UsageError(
            f"journal {path}: cannot {what}: no journal yet (has the coordinator run?)"
        )
    try:
        return FleetJournal(path, retention_days=loaded.retention_days, read_only=read_only)
    except (JournalUnavailable, OSError, ValueError) as err:
        raise UsageError(f"journal {path}: cannot {what}: {_reason(err)}") from None


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return " ".join(str(err).split()) or type(err).__name__


def _target(loaded: FleetConfig, args: argparse.Namespace) -> int:
    import sqlite3  # noqa: PLC0415

    from controller.cli import UsageError  # noqa: PLC0415
    from controller.clock import SystemClock  # noqa: PLC0415
    from controller.logs import configure_logging  # noqa: PLC0415
    from coordinator.journal import JournalUnavailable  # noqa: PLC0415

    configure_logging(level="critical")  # the decision is the output, on one line
    action = args.target_action
    what = {"add": "add the target", "cancel": "cancel the target", "list": "list the targets"}
    journal = _open_journal(loaded, read_only=action == "list", what=what[action])
    now = SystemClock().now()
    try:
        if action == "list":
            rows = [_target_row(r, now) for r in journal.targets(None if args.all else now)]
            recent = [d.to_json() for d in journal.decisions()]
            if args.json:
                print(json.dumps({"targets": rows, "recent": recent}, indent=2, sort_keys=True))
            else:
                _print_targets(rows)
            return 0
        if action == "cancel":
            decision = journal.cancel_target(args.id, now=now, source="cli")
        else:
            payload = {
                "id": args.id,
                "group": args.group,
                "type": args.type,
                "kw": args.kw,
                "start": args.start or now.isoformat(),
                "end": args.end,
                "priority": args.priority,
            }
            decision = journal.add_target(payload, settings=loaded.fleet, now=now, source="cli")
    except (JournalUnavailable, sqlite3.Error, OSError) as err:
        path = loaded.journal_path
        raise UsageError(f"journal {path}: cannot {what[action]}: {_reason(err)}") from None
    finally:
        journal.close()
    if decision.result == "rejected":
        raise UsageError(f"target {decision.id or '?'} rejected: {decision.reason}")
    print(f"{decision.result} {decision.id}")
    return 0


def _target_row(record: Any, now: datetime) -> dict[str, Any]:
    """One journaled target (``TargetRecord``) as ``list`` shows it."""
    t = record.target
    state = (
        "cancelled"
        if record.cancelled_at is not None
        else "ended"
        if t.end <= now
        else "active"
        if t.active_at(now)
        else "pending"
    )
    return {
        **t.to_json(),
        "state": state,
        "rev": record.rev,
        "source": record.source,
        "baseline_kw": record.baseline_kw,
    }


def _print_targets(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'id':<20} {'group':<12} {'type':<12} {'kw':>9} {'prio':>4} "
        f"{'start (UTC)':<20} {'end (UTC)':<20} {'rev':>4} state"
    )
    for t in rows:
        print(
            f"{_s(t.get('id')):<20} {_s(t.get('group')):<12} {_s(t.get('type')):<12} "
            f"{_num(t.get('kw')):>9} {_s(t.get('priority')):>4} "
            f"{_utc(t.get('start')):<20} {_utc(t.get('end')):<20} {_s(t.get('rev')):>4} "
            f"{_s(t.get('state'))}"
        )


# -- status --------------------------------------------------------------------------------


def _status(loaded: FleetConfig, *, as_json: bool) -> int:
    journal = _open_journal(loaded, read_only=True, what="read the fleet status")
    try:
        fleet_doc = journal.fleet_status()
        targets_doc = journal.document("target_status") or {}
    except Exception as err:  # a journal another version wrote, a locked file: one line
        from controller.cli import UsageError  # noqa: PLC0415

        raise UsageError(
            f"journal {loaded.journal_path}: cannot read the fleet status: {_reason(err)}"
        ) from None
    finally:
        journal.close()
    live = _scrape(loaded)
    if as_json:
        doc = {
            "fleet": loaded.fleet.name,
            "status": fleet_doc,
            "targets": targets_doc,
            "metrics": live,
        }
        print(json.dumps(doc, indent=2, sort_keys=True, default=str))
        return 0
    _print_status(loaded, fleet_doc, targets_doc, live)
    return 0


def _scrape(loaded: FleetConfig) -> dict[str, Any] | None:
    """The ``feederd_fleet_*`` samples of the running coordinator's endpoint (None: it does not
    answer: not running, or metrics off), read once with a short timeout."""
    import urllib.request  # noqa: PLC0415

    m = loaded.metrics
    if not m.enabled or m.port == 0:
        return None
    host = f"[{m.address}]" if ":" in m.address else m.address
    if m.address in ("0.0.0.0", "::"):
        host = "127.0.0.1" if m.address == "0.0.0.0" else "[::1]"
    try:
        with urllib.request.urlopen(
            f"http://{host}:{m.port}/metrics", timeout=METRICS_TIMEOUT_S
        ) as resp:
            text = resp.read(_METRICS_MAX_BYTES).decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    return _parse_samples(text)


_SAMPLE = re.compile(r"^(feederd_fleet_[a-z_]+)(\{[^}]*\})? (\S+)$", re.MULTILINE)
_LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')


def _parse_samples(text: str) -> dict[str, Any]:
    """``{"mqtt_connected": 1.0, "feeder_up": {"site=north-1": 1.0}, ...}`` of the gauges."""
    out: dict[str, Any] = {}
    for name, labels, value in _SAMPLE.findall(text):
        short = name.removeprefix("feederd_fleet_")
        try:
            number_ = float(value)
        except ValueError:
            continue
        if not labels:
            out[short] = number_
            continue
        key = ",".join(f"{k}={v}" for k, v in _LABEL.findall(labels))
        slot = out.setdefault(short, {})
        if isinstance(slot, dict):
            slot[key] = number_
    return out


def _print_status(
    loaded: FleetConfig,
    fleet_doc: dict[str, Any] | None,
    targets_doc: dict[str, Any],
    live: dict[str, Any] | None,
) -> None:
    f = loaded.fleet
    if live is None:
        running = "not answering on its metrics endpoint (stopped, or metrics off)"
    else:
        up = live.get("mqtt_connected")
        running = f"running, broker {'connected' if up == 1.0 else 'NOT connected'}"
    print(f"fleet {f.name}: {len(f.feeders)} feeders; coordinator {running}")
    if fleet_doc is None:
        print("no fleet status in the journal yet (the coordinator has not ticked)")
        return
    at = fleet_doc.get("at")
    if at is not None:
        print(f"as of {_utc(at)} (UTC)")
    imp = fleet_doc.get("import_kw")
    if imp is not None:
        print(f"fleet import {_num(imp)} kW")
    feeders = fleet_doc.get("feeders")
    rows = _feeder_rows(feeders)
    print(f"{'site':<20} {'import kw':>10} {'limit kw':>10} {'share %':>8} {'health':<10} state")
    for site, row in rows:
        print(
            f"{site:<20} {_num(row.get('import_kw')):>10} {_num(row.get('limit_kw')):>10} "
            f"{_pct(row.get('share')):>8} {_s(row.get('health')):<10} {_s(row.get('state'))}"
        )
    targets = fleet_doc.get("targets")
    if not isinstance(targets, list):
        targets = targets_doc.get("targets") or []
    if targets:
        print(
            f"{'target':<20} {'group':<12} {'limit kw':>10} {'import kw':>10} "
            f"{'shortfall kw':>12} state"
        )
    for t in targets:
        if not isinstance(t, dict):
            continue
        print(
            f"{_s(t.get('id')):<20} {_s(t.get('group')):<12} {_num(t.get('limit_kw')):>10} "
            f"{_num(t.get('fleet_import_kw')):>10} {_num(t.get('shortfall_kw')):>12} "
            f"{_target_state(t)}"
        )


def _target_state(t: dict[str, Any]) -> str:
    if isinstance(t.get("state"), str):
        return str(t["state"])
    return "active" if t.get("active") else "pending"


def _feeder_rows(feeders: object) -> list[tuple[str, dict[str, Any]]]:
    """The status document's feeders, as a list or a mapping by site."""
    if isinstance(feeders, dict):
        return [(str(k), v) for k, v in feeders.items() if isinstance(v, dict)]
    if isinstance(feeders, list):
        return [(_s(v.get("site")), v) for v in feeders if isinstance(v, dict)]
    return []


def _s(value: object) -> str:
    return "-" if value is None else str(value)


def _num(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{value:.1f}"


def _pct(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{100.0 * value:.1f}"


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _utc(value: object) -> str:
    at = _time(value)
    return "-" if at is None else at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
