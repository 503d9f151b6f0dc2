"""The fleet coordinator at city scale: 1,000 simulated feeders on one broker, the real
coordinator daemon above them. How long does the allocation take, and how long from a new
system target to every feeder's accepted status collected by the coordinator?

Starts a real Mosquitto on loopback (``max_queued_messages`` raised: a fleet's burst of
statuses must not be dropped by the broker on its way to the coordinator), ``--feeders`` fake
feeders (``tests.support.fake_fleet``: seeded sizes and curves, each publishing its
flexibility retained, answering its ``dr/event`` on its retained ``dr/status`` after
``controller.dr.events.parse_payload``, drawing ``min(baseline, limit)``) in a process of
their own (as a real fleet is on other machines: the coordinator's process is measured alone)
over ``--connections`` MQTT connections, and the coordinator
(``coordinator.daemon.FleetDaemon``, the system clock, its journal on disk, one transformer
over every ten feeders rated at 97 % of their baselines) subscribed to all of them. Then:

- ``allocation_ms``: ``coordinator.allocation.allocate`` timed directly, ``--allocations``
  times, on the inputs the coordinator has (each feeder's flexibility; the target's group and
  the transformers); median and p95. ``daemon_allocation_ms_mean`` is the daemon's own
  ``feederd_fleet_allocation_seconds`` (sum / count) over the run, for comparison;
- ``ack_ms``: ``--targets`` times, a ``reduce_by`` target over the whole fleet is published on
  ``<topic_root>/target`` (QoS 1), and the time runs until the coordinator holds an
  ``accepted`` decision from every feeder it asked (polled on its worker thread every 10 ms,
  in turn with its message handling: the figure is late by at most one poll); median and p95,
  with the phases' medians (``ack_phases_ms_median``: the tick that allocated, the first and
  the last event at a feeder, the last feeder's answer out; one clock, ``time.monotonic``,
  for both processes). Between two targets the target is cancelled (every cancel answered)
  and the feeders report their flexibility again. ``--mode fair`` asks every feeder (the most
  acknowledgements); ``cost`` (the default) about half of them.

Prints one JSON object. Targets (issue 17): allocation under 100 ms for 1,000 feeders; target
to all acknowledgements under 2 s on loopback.

    .venv/bin/python benchmarks/fleet_scale.py [--feeders 1000] [--connections 10]
        [--targets 10] [--allocations 20] [--seed 17] [--mode cost|fair]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiomqtt

ROOT = Path(__file__).resolve().parent.parent
INTERVAL_S = 30.0
"""The coordinator's check cadence (real seconds)."""
PER_TRANSFORMER = 10
"""Feeders under one shared transformer."""
BROKER_CONFIG = "max_queued_messages 100000\n"
"""A thousand feeders' statuses arrive at the coordinator at once: Mosquitto's default queue
per client (1,000 beyond the in-flight window) would drop some of them."""
GUARD_S = 120.0
"""A wait longer than this (real seconds) is a failure, reported as such."""


def _stats(values_ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values_ms)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {
        "median": round(statistics.median(ordered), 2),
        "p95": round(p95, 2),
        "max": round(ordered[-1], 2),
        "n": len(ordered),
    }


def fleet_table(
    feeders: Sequence[Any], port: int, workdir: Path, mode: str = "cost"
) -> dict[str, Any]:
    """The ``fleet.toml`` of the fake fleet: every feeder at its rating, one transformer over
    every ``PER_TRANSFORMER`` of them rated at 97 % of their baselines' sum (so they bind)."""
    transformers: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for k in range(0, len(feeders), PER_TRANSFORMER):
        name = f"T{k // PER_TRANSFORMER:03d}"
        group = feeders[k : k + PER_TRANSFORMER]
        transformers.append(
            {"name": name, "rating_kw": round(0.97 * sum(f.baseline_kw for f in group), 1)}
        )
        rows.extend({"site": f.site, "rating_kw": f.rating_kw, "transformer": name} for f in group)
    return {
        "name": "bench",
        "mode": mode,
        "feeder_root": "feederd",
        "interval_s": INTERVAL_S,
        "silent_after_s": 4 * INTERVAL_S,
        "max_age_s": 8 * INTERVAL_S,
        "journal": {"path": str(workdir / "fleet.sqlite")},
        "mqtt": {"host": "127.0.0.1", "port": port, "queue_size": 10_000},
        "metrics": {"enabled": False},
        "feeders": rows,
        "transformers": transformers,
    }


def time_allocations(feeders: Sequence[Any], fleet: Any, reduce_kw: float, n: int) -> list[float]:
    """``allocate`` on the inputs the coordinator has (each feeder's range and curve, the
    target over all, every transformer), ``n`` times: the ms of each."""
    from coordinator.allocation import Constraint, FeederInput, allocate  # noqa: PLC0415

    inputs = [
        FeederInput(site=f.site, min_kw=f.min_kw, max_kw=f.baseline_kw, curve=f.curve)
        for f in feeders
    ]
    limit_kw = sum(f.baseline_kw for f in feeders) - reduce_kw
    constraints = [Constraint(name="target", sites=fleet.sites, limit_kw=limit_kw)]
    for t in fleet.transformers:
        sites = tuple(f.site for f in fleet.feeders if f.transformer == t.name)
        constraints.append(Constraint(name=t.name, sites=sites, limit_kw=t.rating_kw))
    out = []
    for _ in range(n):
        started = time.perf_counter()
        result = allocate(inputs, constraints, mode=fleet.mode)
        out.append((time.perf_counter() - started) * 1e3)
        if result.status != "optimal":
            raise RuntimeError(f"allocation {result.status}")
    return out


class FleetProcess:
    """The fake feeders in a process of their own (``--serve-fleet``), as a real fleet is on
    other machines: the coordinator's process is measured alone. It hears each answer the
    feeders send (``d <result> <event id> <arrived> <sent>``, ``time.monotonic`` seconds,
    which is one clock across processes here) and asks for a round of flexibility (``flex``
    on its stdin, ``flex <seq>`` back once published)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.answers: list[tuple[str, str, float, float]] = []
        self.ready = asyncio.Event()
        self._flex: asyncio.Queue[int] = asyncio.Queue()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, args: argparse.Namespace, port: int) -> AsyncIterator[FleetProcess]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve-fleet",
            f"--port={port}",
            f"--feeders={args.feeders}",
            f"--connections={args.connections}",
            f"--seed={args.seed}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        fleet = cls(proc)
        reader = asyncio.create_task(fleet._read(), name="bench.fleet.read")
        try:
            await asyncio.wait_for(fleet.ready.wait(), GUARD_S)
            yield fleet
        finally:
            assert proc.stdin is not None
            proc.stdin.close()  # the fleet's cue to end
            try:
                await asyncio.wait_for(proc.wait(), 10.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
            reader.cancel()

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            word, *rest = raw.decode().split()
            if word == "d":
                result, event_id, arrived, sent = rest
                self.answers.append((result, event_id, float(arrived), float(sent)))
            elif word == "flex":
                self._flex.put_nowait(int(rest[0]))
            elif word == "ready":
                self.ready.set()

    async def flex(self) -> int:
        """A round of flexibility from every feeder; its ``seq``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"flex\n")
        await self.proc.stdin.drain()
        return await asyncio.wait_for(self._flex.get(), GUARD_S)

    def count(self, result: str, prefix: str) -> int:
        return sum(1 for r, i, _, _ in self.answers if r == result and i.startswith(prefix))


async def serve_fleet(args: argparse.Namespace) -> None:
    """``--serve-fleet``: the fake feeders on ``--port`` until stdin closes (see
    ``FleetProcess``)."""
    from controller.clock import SystemClock  # noqa: PLC0415
    from tests.support.fake_fleet import FakeFleet, make_feeders  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    out = sys.stdout

    def answered(_site: str, decision: dict[str, Any], arrived: float, sent: float) -> None:
        out.write(f"d {decision['result']} {decision['id']} {arrived:.6f} {sent:.6f}\n")
        out.flush()

    feeders = make_feeders(args.feeders, seed=args.seed, interval_s=INTERVAL_S)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    async with FakeFleet.open(
        feeders, port=args.port, now=SystemClock().now, connections=args.connections
    ) as fake:
        fake.on_answer = answered
        out.write("ready\n")
        out.flush()
        async for line in stdin:
            if line.strip() == b"flex":
                await fake.publish_flex()
                out.write(f"flex {feeders[0].seq}\n")
                out.flush()


async def time_targets(
    daemon: Any, fleet: FleetProcess, operator: aiomqtt.Client, ticks: Sequence[float], **how: Any
) -> tuple[list[float], dict[str, list[float]]]:
    """``how["targets"]`` times: a ``reduce_by`` over all (10-30 % of ``how["flexible_kw"]``),
    timed from its publication to the coordinator holding every asked feeder's acceptance;
    then cancelled (every cancel answered) and a round of flexibility. Returns those times
    (ms) and their phases (ms from the publication): the tick that allocated (``ticks``: when
    each tick that sent events returned), the first and the last event at a feeder, the last
    feeder's answer out."""
    from tests.support.fake_fleet import acknowledged  # noqa: PLC0415
    from tests.support.wait import eventually  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    topic = daemon.fleet.target_topic
    out = []
    phases: dict[str, list[float]] = collections.defaultdict(list)
    for k in range(how["targets"]):
        target_id = f"bench-{k}"
        prefix = f"fleet:{target_id}:"
        now = daemon.clock.now()
        target = {
            "id": target_id,
            "group": "all",
            "type": "reduce_by",
            "kw": round((0.1 + 0.05 * (k % 5)) * how["flexible_kw"], 1),
            "start": now.isoformat(),
            "end": (now + timedelta(hours=1)).isoformat(),
        }

        async def acked(tid: str = target_id) -> bool:
            asked, accepted = await daemon.call(lambda core: acknowledged(core, tid))
            return bool(0 < asked == accepted)

        t0 = loop.time()
        await operator.publish(topic, json.dumps(target), qos=1)
        await eventually(acked, f"every acknowledgement of {target_id}", guard_s=GUARD_S)
        out.append((loop.time() - t0) * 1e3)
        mine = [(a, s) for r, i, a, s in fleet.answers if r == "accepted" and i.startswith(prefix)]
        ticked = [t for t in ticks if t >= t0]
        phases["tick_ms"].append(1e3 * (ticked[0] - t0) if ticked else math.nan)
        phases["first_event_ms"].append(1e3 * (min(a for a, _ in mine) - t0))
        phases["last_event_ms"].append(1e3 * (max(a for a, _ in mine) - t0))
        phases["last_answer_ms"].append(1e3 * (max(s for _, s in mine) - t0))
        phases["asked"].append(len(mine))
        await operator.publish(topic, json.dumps({"id": target_id, "cancel": True}), qos=1)

        async def cancelled(p: str = prefix) -> bool:
            return fleet.count("cancelled", p) >= fleet.count("accepted", p)

        await eventually(cancelled, f"the cancels of {target_id}", guard_s=GUARD_S)
        seq = await fleet.flex()

        async def heard(seq: int = seq) -> bool:
            return bool(
                await daemon.call(
                    lambda core: all(s.flex is not None and s.flex.seq >= seq for s in core.feeders)
                )
            )

        await eventually(heard, "the feeders' flexibility", guard_s=GUARD_S)
    return out, phases


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from controller.clock import SystemClock  # noqa: PLC0415
    from coordinator.config import parse_fleet  # noqa: PLC0415
    from coordinator.daemon import FleetDaemon  # noqa: PLC0415
    from hil import MosquittoBroker  # noqa: PLC0415
    from tests.support.fake_fleet import make_feeders  # noqa: PLC0415
    from tests.support.wait import eventually  # noqa: PLC0415

    feeders = make_feeders(args.feeders, seed=args.seed, interval_s=INTERVAL_S)
    flexible_kw = sum(f.baseline_kw - f.min_kw for f in feeders)
    clock = SystemClock()
    loop = asyncio.get_running_loop()
    ticks: list[float] = []

    def on_tick(out: list[Any]) -> None:
        if any(not o.retain for o in out):
            ticks.append(loop.time())

    with tempfile.TemporaryDirectory(prefix="fleet_scale_") as tmp:
        workdir = Path(tmp)
        async with MosquittoBroker(extra_config=BROKER_CONFIG) as broker:
            table = fleet_table(feeders, broker.port, workdir, args.mode)
            config = parse_fleet(table, source="<bench>", base_dir=workdir)
            mqtt = dataclasses.replace(config.mqtt_settings(), backoff_min_s=0.05)
            started = time.perf_counter()
            async with FleetDaemon.open(config, clock=clock, mqtt=mqtt, on_tick=on_tick) as daemon:
                stop = asyncio.Event()
                running = asyncio.create_task(daemon.run(stop), name="bench.coordinator")
                try:
                    async with (
                        FleetProcess.open(args, broker.port) as fleet,
                        aiomqtt.Client("127.0.0.1", broker.port) as operator,
                    ):

                        async def heard() -> bool:
                            return bool(
                                await daemon.call(
                                    lambda core: all(s.flex is not None for s in core.feeders)
                                )
                            )

                        await eventually(heard, "every feeder's flexibility", guard_s=GUARD_S)
                        setup_s = time.perf_counter() - started
                        acks, phases = await time_targets(
                            daemon,
                            fleet,
                            operator,
                            ticks,
                            targets=args.targets,
                            flexible_kw=flexible_kw,
                        )
                    metric = daemon.metrics.registry.get_sample_value
                    count = metric("feederd_fleet_allocation_seconds_count") or 0.0
                    total = metric("feederd_fleet_allocation_seconds_sum") or 0.0
                    published = metric("feederd_fleet_events_published_total", {"kind": "event"})
                finally:
                    stop.set()
                    await asyncio.wait({running}, timeout=10.0)
    allocations = time_allocations(feeders, config.fleet, 0.2 * flexible_kw, args.allocations)
    return {
        "feeders": len(feeders),
        "mode": args.mode,
        "connections": args.connections,
        "transformers": len(config.fleet.transformers),
        "fleet_max_kw": round(sum(f.baseline_kw for f in feeders), 1),
        "fleet_flexible_kw": round(flexible_kw, 1),
        "allocation_ms": _stats(allocations),
        "daemon_allocation_ms_mean": round(1e3 * total / count, 2) if count else None,
        "daemon_allocations": int(count),
        "ack_ms": _stats(acks),
        "ack_phases_ms_median": {
            k: round(statistics.median(v), 1) for k, v in phases.items() if k != "asked"
        },
        "feeders_asked_median": statistics.median(phases["asked"]),
        "events_published": int(published or 0),
        "setup_s": round(setup_s, 2),
        "targets": {"allocation_ms": 100.0, "ack_ms": 2000.0},
    }


def main() -> None:
    sys.path.insert(0, str(ROOT))  # tests.support, from a checkout
    from controller.logs import configure_logging  # noqa: PLC0415

    configure_logging(level="error", stream=sys.stderr)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeders", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--targets", type=int, default=10)
    parser.add_argument("--allocations", type=int, default=20)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument(
        "--mode",
        choices=("cost", "fair"),
        default="cost",
        help="the allocation's (fair: every feeder is asked, the most acknowledgements)",
    )
    parser.add_argument("--serve-fleet", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        if args.serve_fleet:
            asyncio.run(serve_fleet(args))
        else:
            print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
