"""``feederd status --config PATH [--json]``: what the running daemon is doing now, at a glance.

Read without disturbing it: the journal is opened read-only (SQLite's ``mode=ro``: no write,
no lock the daemon waits for, no file created; a reader in WAL mode never holds up the writer)
and, when the config serves metrics, ``/metrics`` is read once over HTTP with a short timeout
(its absence is said, never fatal). Shown:

- the last interval: its time (and how long ago by this machine's clock), its status, the head
  import against the limit in force, the devices down;
- the DR events in force and coming, as of the last interval (id, type, kW, window, source, and
  the shortfall the last plan predicts for it);
- the plan's next hour (the journal's plan document, at 0, 15, 30, 45 and 60 minutes);
- the flexibility last computed (``feederd_flex_*`` from the metrics).

A journal that is missing or not a feederd journal exits 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from controller.config import Config

HELP = "what the running daemon does now (its journal and metrics, read-only)"

METRICS_TIMEOUT_S = 2.0
"""How long ``/metrics`` is waited for: the daemon's endpoint answers in milliseconds."""
METRICS_MAX_BYTES = 4_000_000
"""The most of ``/metrics`` read (the daemon's is tens of kB)."""
PLAN_MINUTES = (0, 15, 30, 45, 60)
MAX_EVENTS = 20
"""Events listed of each kind (in force, coming); the count says if there are more."""
_FLEX_METRICS = {
    "feederd_flex_min_kw": "min_kw",
    "feederd_flex_max_kw": "max_kw",
    "feederd_dr_import_limit_kw": "limit_kw",
    "feederd_feeder_import_kw": "import_kw",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="feederd.toml of the running daemon")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def run(args: argparse.Namespace) -> int:
    from controller.cli import UsageError  # noqa: PLC0415
    from controller.config import load_config  # noqa: PLC0415

    loaded = load_config(args.config)
    path = loaded.journal_path
    if path is None:
        raise UsageError(f"{args.config}: journal.path: the config has no journal to read")
    try:
        doc = read_journal(path)
    except JournalUnreadable as err:
        raise UsageError(str(err)) from None
    doc["site"] = loaded.config.site
    doc["interval_s"] = loaded.config.interval_s
    doc["metrics"] = read_metrics(loaded.config, base_dir=Path(loaded.base_dir))
    doc["now"] = datetime.now(UTC).isoformat()
    if args.json:
        print(json.dumps(doc, allow_nan=False, default=str))
    else:
        print(render(doc))
    return 0


class JournalUnreadable(Exception):
    """The journal is missing, cannot be read, or is not a feederd journal (one line)."""


def _connect(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise JournalUnreadable(f"{path}: no such journal file")
    try:
        db = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error as err:
        raise JournalUnreadable(f"{path}: cannot be opened read-only: {err}") from None
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as err:
        db.close()
        raise JournalUnreadable(f"{path}: not a feederd journal: {err}") from None
    missing = {"interval", "dr_event", "plan"} - tables
    if missing:
        db.close()
        raise JournalUnreadable(
            f"{path}: not a feederd journal (no {', '.join(sorted(missing))} table)"
        )
    return db


def read_journal(path: Path) -> dict[str, Any]:
    """The last interval, the events not yet over at its time, and the plan's next hour."""
    db = _connect(path)
    try:
        row = db.execute("SELECT at, record FROM interval ORDER BY id DESC LIMIT 1").fetchone()
        plan_row = db.execute("SELECT doc FROM plan WHERE id = 1").fetchone()
        last = None if row is None else {**json.loads(row[1]), "at": row[0]}
        at = datetime.fromisoformat(last["at"]) if last else datetime.now(UTC)
        events = db.execute(
            "SELECT id, type, kw, start, end, priority, source, baseline_import_kw FROM dr_event"
            " WHERE end_ts > ? AND cancelled_at IS NULL ORDER BY start, id",
            (at.timestamp(),),
        ).fetchall()
    except (sqlite3.Error, ValueError, TypeError, KeyError) as err:
        raise JournalUnreadable(f"{path}: cannot be read: {type(err).__name__}: {err}") from None
    finally:
        db.close()
    plan_doc = None if plan_row is None else json.loads(plan_row[0])
    return {
        "journal": str(path),
        "last_interval": None if last is None else _interval(last),
        "events": _events(events, at, plan_doc),
        "plan": _plan(plan_doc),
    }


def _interval(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "at": record["at"],
        "cycle": record.get("cycle"),
        "status": record.get("status"),
        "import_kw": record.get("import_kw"),
        "import_limit_kw": record.get("import_limit_kw"),
        "export_limit_kw": record.get("export_limit_kw"),
        "devices_up": record.get("devices_up"),
        "devices_down": list(record.get("devices_missing") or ()),
        "dr_events": list(record.get("dr_events") or ()),
        "plan_shortfall_kw": record.get("plan_shortfall_kw"),
    }


def _events(rows: list[Any], at: datetime, plan_doc: dict[str, Any] | None) -> dict[str, Any]:
    predicted = {
        str(e.get("id")): e.get("predicted_shortfall_kw")
        for e in (plan_doc or {}).get("events", [])
        if isinstance(e, dict)
    }
    active: list[dict[str, Any]] = []
    coming: list[dict[str, Any]] = []
    for event_id, kind, kw, start, end, priority, source, baseline in rows:
        item = {
            "id": event_id,
            "type": kind,
            "kw": kw,
            "start": start,
            "end": end,
            "priority": priority,
            "source": source,
            "baseline_import_kw": baseline,
            "predicted_shortfall_kw": predicted.get(event_id),
        }
        (active if datetime.fromisoformat(start) <= at else coming).append(item)
    return {
        "as_of": at.isoformat(),
        "active": active[:MAX_EVENTS],
        "coming": coming[:MAX_EVENTS],
        "active_count": len(active),
        "coming_count": len(coming),
    }


def _plan(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """The plan's steps at ``PLAN_MINUTES`` from its making (``None``: no plan stored)."""
    from controller.plan import Plan, PlanError  # noqa: PLC0415

    if doc is None:
        return None
    try:
        plan = Plan.from_json(doc)
    except PlanError as err:
        return {"at": doc.get("at"), "error": str(err), "ahead": []}
    ahead = []
    for minutes in PLAN_MINUTES:
        step = plan.ahead(minutes)
        if step is None:
            continue
        ahead.append(
            {
                "minutes": minutes,
                "at": (plan.at + timedelta(minutes=minutes)).isoformat(),
                "import_kw": step.import_kw,
                "import_limit_kw": step.import_limit_kw,
                "shortfall_kw": step.shortfall_kw,
                "soc_pct": step.soc_pct,
                "battery_kw": step.battery_kw,
                "curtailed_kw": step.curtailed_kw,
            }
        )
    return {"at": plan.at.isoformat(), "max_shortfall_kw": plan.max_shortfall_kw, "ahead": ahead}


def read_metrics(
    config: Config, *, base_dir: Path = Path(), timeout_s: float = METRICS_TIMEOUT_S
) -> dict[str, Any]:
    """The flexibility and limits from the daemon's ``/metrics`` (``available`` false, with
    the reason, when the config serves none or it does not answer); ``base_dir``: where the
    config's relative paths start."""
    import contextlib  # noqa: PLC0415
    import ssl  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    m = config.metrics
    if not m.enabled:
        return {"available": False, "reason": "metrics.enabled is false"}
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(m.host, m.host)
    host = f"[{host}]" if ":" in host else host
    tls = m.tls_cert_file is not None
    url = f"{'https' if tls else 'http'}://{host}:{m.port}/metrics"
    context = None
    if tls:  # the daemon's own certificate: trusted as its own issuer when self-signed
        context = ssl.create_default_context()
        cert = Path(m.tls_cert_file or "")
        with contextlib.suppress(OSError, ssl.SSLError):  # then the system's trust alone
            context.load_verify_locations(cafile=cert if cert.is_absolute() else base_dir / cert)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as response:
            text = response.read(METRICS_MAX_BYTES).decode("utf-8", "replace")
    except (OSError, urllib.error.URLError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return {"available": False, "url": url, "reason": f"{url}: {reason}"}
    out: dict[str, Any] = {"available": True, "url": url}
    missed: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in _FLEX_METRICS:
                    out[_FLEX_METRICS[sample.name]] = _finite(sample.value)
                elif sample.name == "feederd_flex_missed_total":
                    missed[sample.labels.get("reason", "")] = sample.value
                elif sample.name == "feederd_flex_solves_total":
                    out["flex_solves"] = sample.value
    except ValueError as err:
        return {"available": False, "url": url, "reason": f"{url}: unreadable: {err}"}
    out["flex_missed"] = missed
    return out


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# -- the text --------------------------------------------------------------------------------


def _kw(value: Any) -> str:
    return "-" if value is None else f"{value:.1f} kW"


STALE_INTERVALS = 3
"""A last interval older than this many intervals: the daemon may not be running."""


def _ago(at: str, now: str, interval_s: float) -> str:
    seconds = (datetime.fromisoformat(now) - datetime.fromisoformat(at)).total_seconds()
    if seconds < 0:
        return f"{_span(-seconds)} ahead of this machine's clock"
    late = seconds > STALE_INTERVALS * interval_s
    return f"{_span(seconds)} ago" + ("; none since: is the daemon running?" if late else "")


def _span(seconds: float) -> str:
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def render(doc: dict[str, Any]) -> str:
    """The status document as the operator reads it."""
    lines = [f"site {doc['site']} (journal {doc['journal']})"]
    last = doc["last_interval"]
    if last is None:
        lines.append("last interval: none yet (the daemon has not completed one)")
    else:
        limit = last["import_limit_kw"]
        head = f"head import {_kw(last['import_kw'])}"
        if limit is None:
            head += ", no import limit"
        else:
            over = (last["import_kw"] or 0.0) - limit
            head += f" against a limit of {_kw(limit)}" + (
                f" ({over:.1f} kW over)" if over > 0 else " (within)"
            )
        lines.append(
            f"last interval: {last['at']} ({_ago(last['at'], doc['now'], doc['interval_s'])}), cycle "
            f"{last['cycle']}, {last['status']}"
        )
        lines.append(f"  {head}")
        down = last["devices_down"]
        lines.append(
            f"  devices: {last['devices_up']} up"
            + (f", down: {', '.join(down)}" if down else ", none down")
        )
    ev = doc["events"]
    for kind in ("active", "coming"):
        items = ev[kind]
        count = ev[f"{kind}_count"]
        title = "DR events in force" if kind == "active" else "DR events coming"
        lines.append(f"{title}: {count if count else 'none'}")
        for e in items:
            shortfall = e["predicted_shortfall_kw"]
            lines.append(
                f"  {e['id']}  {e['type']} {e['kw']:g} kW  {e['start']} to {e['end']}"
                f"  from {e['source']}  predicted shortfall "
                + ("-" if shortfall is None else f"{shortfall:.1f} kW")
            )
        if count > len(items):
            lines.append(f"  ... and {count - len(items)} more")
    plan = doc["plan"]
    if plan is None:
        lines.append("plan: none stored yet")
    elif "error" in plan:
        lines.append(f"plan: the stored plan cannot be read: {plan['error']}")
    else:
        lines.append(
            f"plan made {plan['at']}, next hour (largest shortfall "
            f"{plan['max_shortfall_kw']:.1f} kW):"
        )
        lines.append("  minutes  import_kw  limit_kw  shortfall_kw  soc_pct  battery_kw")
        for s in plan["ahead"]:
            lines.append(
                f"  {s['minutes']:>7}  {_n(s['import_kw']):>9}  {_n(s['import_limit_kw']):>8}"
                f"  {_n(s['shortfall_kw']):>12}  {_n(s['soc_pct']):>7}  {_n(s['battery_kw']):>10}"
            )
    m = doc["metrics"]
    if not m["available"]:
        lines.append(f"flexibility: metrics not available ({m['reason']})")
    elif m.get("min_kw") is None or m.get("max_kw") is None:
        missed = ", ".join(f"{k} {v:g}" for k, v in sorted(m.get("flex_missed", {}).items()))
        lines.append(
            "flexibility: not computed in the last interval"
            + (f" (missed so far: {missed})" if missed else "")
        )
    else:
        lines.append(
            f"flexibility (next hour): can hold down to {_kw(m['min_kw'])}, draws up to "
            f"{_kw(m['max_kw'])} left alone"
        )
    return "\n".join(lines)


def _n(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"
