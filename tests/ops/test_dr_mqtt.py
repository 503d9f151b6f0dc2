"""DR events over a real Mosquitto: applied within one interval, rejections, restarts."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ops_helpers import FEEDERD, MOSQUITTO, free_port, mqtt_pub, mqtt_retained, wait_port

from controller.clock import SystemClock
from controller.dr import MqttIntake, MqttSettings
from controller.dr.service import DrService
from controller.journal import Journal

LINE = re.compile(r"^t=\s*[\d.]+s\s+import\s+(-?[\d.]+) kW\s+limit\s+([\d.]+) kW")


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)


async def mosquitto(conf: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        MOSQUITTO, "-c", str(conf), stderr=asyncio.subprocess.DEVNULL
    )


def _rfc3339(delta_s: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta_s)).isoformat()


def test_event_published_with_mosquitto_pub_drives_the_demo(
    broker: int, site: str, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [
            FEEDERD,
            "demo",
            "--duration",
            "14",
            "--interval",
            "1",
            "--import-limit-kw",
            "2300",
            "--mqtt",
            f"mqtt://127.0.0.1:{broker}",
            "--site",
            site,
            "--journal",
            str(tmp_path / "journal.sqlite"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[tuple[float, float]] = []
    try:
        assert proc.stdout is not None
        while len(lines) < 3:  # the controller is running and connected
            m = LINE.match(proc.stdout.readline())
            if m:
                lines.append((float(m.group(1)), float(m.group(2))))
        topic = f"feederd/{site}/dr/event"
        event = {
            "id": "peak-1",
            "type": "import_limit",
            "kw": 2000,
            "start": _rfc3339(-60),
            "end": _rfc3339(3600),
        }
        mqtt_pub(broker, topic, json.dumps(event))
        sent_at = len(lines)
        bad = {**event, "id": "bad-1", "kw": "lots"}
        mqtt_pub(broker, topic, json.dumps(bad))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    lines += [
        (float(m.group(1)), float(m.group(2))) for m in map(LINE.match, out.splitlines()) if m
    ]
    # applied within one interval: the next line's dispatch uses 2000 kW ...
    limits = [limit for _, limit in lines]
    first = limits.index(2000.0)
    assert first <= sent_at + 1, limits
    # ... and the interval after that measures the head import under it; later on only the
    # one interval after the demo's cloud cuts PV may be over (the controller reacts next)
    after = [kw for kw, _ in lines[first + 1 :]]
    assert after[0] <= 2000 * 1.02, lines
    over = [i for i, kw in enumerate(after) if kw > 2000 * 1.02]
    assert len(over) <= 1, lines
    assert all(after[i + 1] <= 2000 * 1.02 for i in over if i + 1 < len(after)), lines
    # the malformed event was rejected on dr/status with its reason, and the daemon ran on
    status = json.loads(mqtt_retained(broker, f"feederd/{site}/dr/status"))
    rejected = [d for d in status["recent"] if d["result"] == "rejected"]
    assert rejected
    assert rejected[-1]["id"] == "bad-1"
    assert "'kw' must be a finite number" in rejected[-1]["reason"]
    assert any(d["id"] == "peak-1" and d["result"] == "accepted" for d in status["recent"])
    assert status["active"]["import_event"] == "peak-1"
    assert len(lines) >= 12  # it kept running to the end of its duration


async def test_accepted_events_survive_a_restart(broker: int, site: str, tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    settings = MqttSettings(
        host="127.0.0.1",
        port=broker,
        topic_root=f"feederd/{site}",
        client_id=f"feederd-{site}",
        backoff_min_s=0.1,
    )

    def service(journal: Journal) -> DrService:
        return DrService(
            journal, clock=SystemClock(), site=site, default_import_kw=3000, default_export_kw=None
        )

    journal = Journal(path)
    first = service(journal)
    intake = MqttIntake(settings, first.submit, initial_status=first.status)
    first.listeners.append(intake.publish_status)
    stop = asyncio.Event()
    task = asyncio.create_task(intake.run(stop))
    await asyncio.wait_for(intake.connected.wait(), 10)
    event = {
        "id": "keep-1",
        "type": "import_limit",
        "kw": 1700,
        "priority": 2,
        "start": _rfc3339(-5),
        "end": _rfc3339(3600),
    }
    await asyncio.to_thread(mqtt_pub, broker, f"feederd/{site}/dr/event", json.dumps(event))
    await until(lambda: bool(first.recent))
    assert first.recent
    assert first.recent[-1].result == "accepted"
    stop.set()
    await asyncio.wait_for(task, 5)
    journal.close()

    # a new process: a fresh journal connection and service, nothing received this time
    reopened = Journal(path)
    second = service(reopened)
    active = second.limits_for_cycle()
    assert (active.import_kw, active.import_event) == (1700, "keep-1")
    reopened.close()
    # and the status it left retained says the event was accepted
    status = json.loads(await asyncio.to_thread(mqtt_retained, broker, f"feederd/{site}/dr/status"))
    assert status["events"][0]["id"] == "keep-1"


async def test_intake_reconnects_and_resubscribes_after_the_broker_restarts(
    tmp_path: Path, site: str
) -> None:
    port = free_port()
    conf = tmp_path / "m.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    received: list[bytes] = []
    settings = MqttSettings(
        host="127.0.0.1",
        port=port,
        topic_root=f"feederd/{site}",
        keepalive_s=5,
        backoff_min_s=0.1,
        backoff_max_s=0.5,
    )
    intake = MqttIntake(settings, received.append)
    stop = asyncio.Event()
    broker = await mosquitto(conf)
    task = asyncio.create_task(intake.run(stop))
    try:
        await asyncio.to_thread(wait_port, port)
        await asyncio.wait_for(intake.connected.wait(), 10)
        broker.terminate()
        await broker.wait()
        await until(lambda: not intake.connected.is_set())
        assert not intake.connected.is_set()
        broker = await mosquitto(conf)
        await asyncio.wait_for(intake.connected.wait(), 10)
        assert intake.connects == 2
        await asyncio.to_thread(mqtt_pub, port, settings.event_topic, "after-restart")
        await until(lambda: bool(received))
        assert received == [b"after-restart"]  # subscribed again on the new connection
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        broker.terminate()
        await broker.wait()
