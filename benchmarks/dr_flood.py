"""A flood of DR events over MQTT against the running daemon: does every one end in a decision
(or a counted drop), and does the control loop keep its interval meanwhile?

Starts a real Mosquitto (unbounded per-client queue, so the broker itself drops nothing), the
HIL feeder in real time and the daemon (``Daemon.open`` on the system clock, MQTT intake,
journal on disk, 2 s interval), lets it settle, then publishes N valid events at QoS 1 as fast
as one client can (distinct ids, a mix of limits; the store keeps at most ``dr.max_events``
not yet over, so the rest are rejected as "store full"). It waits until every event has a
decision (accepted + rejected = N) or nothing has moved for 60 s, and prints one JSON object:
the counts (``dropped_in``: messages the intake's full queue dropped unacknowledged, which
the broker redelivered after the intake reconnected, so they are among the decisions too;
``lost``: events without a decision), the decisions' throughput, the longest gap between
two intervals against the interval, cycle overruns, and the resident memory before and after.

    .venv/bin/python benchmarks/dr_flood.py [--events N] [--interval S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import aiomqtt

from controller.clock import SystemClock
from controller.commands.rig.config import rig_config
from controller.daemon import Daemon
from controller.dr.intake import MqttSettings
from controller.records import CycleRecord
from hil import HilRig, MosquittoBroker


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _events(n: int) -> list[bytes]:
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        start = now + timedelta(minutes=i % 120)
        out.append(
            json.dumps(
                {
                    "id": f"flood-{i}",
                    "type": "import_limit",
                    "kw": 1800 + i % 400,
                    "start": start.isoformat(),
                    "end": (start + timedelta(hours=1)).isoformat(),
                    "priority": i % 7,
                }
            ).encode()
        )
    return out


async def bench(n: int, interval_s: float) -> dict[str, Any]:
    clock = SystemClock()
    ticks: list[float] = []

    def on_cycle(rec: CycleRecord) -> None:
        ticks.append(rec.at_s)

    async with (
        MosquittoBroker(extra_config="max_queued_messages 0\n") as broker,
        HilRig(load_scale=lambda _t: 1.0, pv_available_frac=lambda _t: 0.8) as rig,
    ):
        with TemporaryDirectory() as tmp:
            loaded = rig_config(
                rig,
                overrides={
                    "interval_s": interval_s,
                    "poll": {"timeout_s": min(1.0, 0.4 * interval_s)},
                    "dr": {"import_limit_kw": 2500.0},
                    "journal": {"path": str(Path(tmp) / "journal.sqlite")},
                },
            )
            settings = MqttSettings(
                host=broker.host,
                port=broker.port,
                topic_root="feederd/flood",
                client_id="feederd-flood",
                backoff_min_s=0.05,
                backoff_max_s=0.5,
            )
            stop = asyncio.Event()
            async with Daemon.open(loaded, clock=clock, mqtt=settings, on_cycle=on_cycle) as daemon:
                control = asyncio.ensure_future(daemon.run(stop))
                intake = daemon.intake
                assert intake is not None
                await asyncio.wait_for(intake.connected.wait(), 60)
                for _ in range(600):  # three intervals, to settle (a hang guard of a minute)
                    if len(ticks) >= 3:
                        break
                    await asyncio.sleep(0.1)
                rss_before = _rss_mb()
                metrics = daemon.metrics

                def accounted() -> int:
                    return int(
                        sum(
                            metrics.dr_events.labels(r)._value.get()
                            for r in ("accepted", "cancelled", "rejected")
                        )
                    )

                first_tick = len(ticks)
                started = time.perf_counter()
                async with aiomqtt.Client(broker.host, broker.port, identifier="flood") as c:
                    for body in _events(n):
                        await c.publish(settings.event_topic, body, qos=1)
                published_s = time.perf_counter() - started
                last, still = accounted(), time.perf_counter()
                while accounted() < n and time.perf_counter() - still < 60.0:
                    await asyncio.sleep(0.2)
                    if accounted() != last:
                        last, still = accounted(), time.perf_counter()
                decided_s = time.perf_counter() - started
                gaps = [
                    b - a for a, b in zip(ticks[first_tick:], ticks[first_tick + 1 :], strict=False)
                ]
                out = {
                    "events": n,
                    "accepted": int(metrics.dr_events.labels("accepted")._value.get()),
                    "rejected": int(metrics.dr_events.labels("rejected")._value.get()),
                    "dropped_in": int(metrics.mqtt_dropped.labels("in")._value.get()),
                    "decided": accounted(),
                    "lost": max(0, n - accounted()),
                    "published_s": round(published_s, 1),
                    "decided_s": round(decided_s, 1),
                    "decisions_per_s": round(accounted() / decided_s, 1),
                    "interval_s": interval_s,
                    "intervals_during": len(gaps),
                    "max_gap_s": round(max(gaps), 3) if gaps else None,
                    "max_gap_over_interval": round(max(gaps) / interval_s, 3) if gaps else None,
                    "overruns": int(metrics.overruns._value.get()),
                    "rss_mb_before": round(rss_before, 1),
                    "rss_mb_after": round(_rss_mb(), 1),
                    "events_stored": daemon.dr.status()["events_stored"],
                }
                stop.set()
                await control
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args()

    from controller.logs import configure_logging  # noqa: PLC0415

    configure_logging(level="error")
    print(json.dumps(asyncio.run(bench(args.events, args.interval))))


if __name__ == "__main__":
    main()
