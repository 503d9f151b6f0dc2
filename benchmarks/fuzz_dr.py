"""Fuzzed DR payloads through a real Mosquitto into the daemon's intake: every one decided,
none left unacknowledged, no traceback.

Starts Mosquitto and the daemon (``Daemon.open``: its MQTT intake and DR service on a journal
file; its devices are not reached, only the DR channel is exercised), publishes N payloads at
QoS 1 (seeded: random bytes, random JSON, events with adversarial values: huge, negative and
non-finite numbers, far times, deep nesting, odd types and strings), waits until N decisions
are counted, then stops the daemon and connects again with its client id: a message it had not
acknowledged would be redelivered to that session. Prints one JSON object: the decisions by
result, the messages redelivered (unacknowledged), and the log lines that say a handler failed
or a decision was an internal error (tracebacks).

    .venv/bin/python benchmarks/fuzz_dr.py [--payloads N] [--seed S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import aiomqtt
import structlog.testing

from controller.clock import SystemClock
from controller.config import parse_config
from controller.daemon import Daemon
from controller.dr.intake import MqttSettings
from hil import MosquittoBroker

_NUMBERS: list[Any] = [
    0, -1, 1e308, -1e308, 2**63, -(2**63) - 1, 10**40, 1.5, 1e-320, True, None, "1500", [1], {},
]  # fmt: skip
_TIMES = [
    "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2026-13-01T00:00:00Z", "yesterday", "",
    "2026-07-01T17:00:00", 1767225600, None,
]  # fmt: skip


def _now_plus(rng: random.Random) -> str:
    return (datetime.now(UTC) + timedelta(minutes=rng.randint(-90, 600))).isoformat()


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 6 else 5)
    if kind == 0:
        return rng.choice(_NUMBERS)
    if kind == 1:
        return rng.random() * 10 ** rng.randint(-5, 12) * rng.choice((1, -1))
    if kind == 2:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(40)))
    if kind == 3:
        return rng.choice(_TIMES)
    if kind == 4:
        return rng.choice(["import_limit", "export_limit", "reduce_by", "shed", ""])
    if kind == 5:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        str(_value(rng, depth + 1))[:8]: _value(rng, depth + 1) for _ in range(rng.randrange(4))
    }


def payload(rng: random.Random, i: int) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
    if kind == 1:
        nest = rng.randrange(1, 3000)
        return b"[" * nest + b"]" * nest
    if kind == 2:
        return json.dumps(_value(rng)).encode()
    event: dict[str, Any] = {
        "id": f"fz-{i}",
        "type": rng.choice(["import_limit", "export_limit", "reduce_by"]),
        "kw": rng.uniform(0, 3000),
        "start": _now_plus(rng),
        "end": _now_plus(rng),
        "priority": rng.randint(-5, 5),
    }
    for key in rng.sample(sorted(event), rng.randint(1, 3)):  # break one to three fields
        event[key] = _value(rng)
    if rng.random() < 0.2:
        event[str(_value(rng))[:12]] = _value(rng)
    if kind == 5 and rng.random() < 0.5:
        event = {"id": event["id"], "cancel": rng.choice([True, 1, "yes", None])}
    return json.dumps(event, allow_nan=True, default=str).encode()


def _config() -> Any:
    data = {
        "site": "fuzz",
        "feeder": {"case": "builtin:case33bw"},
        "metrics": {"enabled": False},
        "devices": [
            {
                "name": "head",
                "kind": "meter",
                "bus": 1,
                "head": True,
                "transport": {"type": "tcp", "host": "127.0.0.1", "port": 9},
            }
        ],
    }
    return parse_config(data, source="<fuzz>", base_dir=Path.cwd())


async def bench(n: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    bodies = [payload(rng, i) for i in range(n)]
    async with MosquittoBroker(extra_config="max_queued_messages 0\n") as broker:
        settings = MqttSettings(
            host=broker.host,
            port=broker.port,
            topic_root="feederd/fuzz",
            client_id="feederd-fuzz",
            backoff_min_s=0.05,
            backoff_max_s=0.5,
        )
        with TemporaryDirectory() as tmp, structlog.testing.capture_logs() as logs:
            async with Daemon.open(
                _config(), clock=SystemClock(), mqtt=settings, journal_path=f"{tmp}/j.sqlite"
            ) as daemon:
                assert daemon.intake is not None
                await asyncio.wait_for(daemon.intake.connected.wait(), 60)
                metrics = daemon.metrics

                def decided() -> dict[str, int]:
                    return {
                        r: int(metrics.dr_events.labels(r)._value.get())
                        for r in ("accepted", "cancelled", "rejected")
                    }

                async with aiomqtt.Client(broker.host, broker.port, identifier="fuzzer") as c:
                    for body in bodies:
                        await c.publish(settings.event_topic, body, qos=1)
                for _ in range(6000):  # a hang guard of ten minutes
                    if sum(decided().values()) >= n:
                        break
                    await asyncio.sleep(0.1)
                counts = decided()
                dropped = int(metrics.mqtt_dropped.labels("in")._value.get())
        failures = [e for e in logs if e["event"] in ("dr_event_failed", "dr_event_handler_failed")]
        # the daemon is gone: its session holds whatever it did not acknowledge
        redelivered = 0
        async with aiomqtt.Client(
            broker.host, broker.port, identifier=settings.client_id, clean_session=False
        ) as again:
            await again.subscribe(settings.event_topic, qos=1)
            try:
                async with asyncio.timeout(3.0):
                    async for _ in again.messages:
                        redelivered += 1
            except TimeoutError:
                pass
    return {
        "payloads": n,
        "seed": seed,
        **counts,
        "decided": sum(counts.values()),
        "dropped_in_then_redelivered": dropped,
        "unacknowledged": redelivered,
        "tracebacks": len(failures),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payloads", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args.payloads, args.seed))))


if __name__ == "__main__":
    main()
