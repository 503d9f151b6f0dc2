"""The coordinator daemon on a real Mosquitto: it subscribes with the wildcard, takes a target
over MQTT and answers on ``target/status``, publishes per-feeder DR events to feeders that are
plain MQTT clients publishing real ``controller.flex.Flexibility`` documents; after a broker
restart it reconnects, subscribes again and publishes nothing twice; it stops without a signal
saying it is offline; ``feederd coordinate status`` and ``target add`` work on its real journal
while it runs.

Simulated time: the daemon's interval ticker is off and ticks are the test's (``tick()``) on a
``FakeClock``; the ticks a message makes due (a target) happen by themselves, at once. Waits are
for conditions on the network (``until``), never for time to pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from controller.cli import main
from controller.clock import FakeClock
from controller.flex import Flexibility
from coordinator.config import FleetConfig, load_fleet
from coordinator.daemon import FleetDaemon, MetricsEndpoint
from devices.tasks import cancel_and_wait
from tests.support.mosquitto import Mosquitto
from tests.support.net import free_port
from tests.support.wait import eventually, until

pytestmark = pytest.mark.integration

T0 = datetime(2030, 6, 4, 12, tzinfo=UTC)
ROOT = "fleet-test"
FEEDER_ROOT = "feeders"
# site: (the import it draws left alone, the lowest it can hold)
SITES = {"n1": (2000.0, 1500.0), "n2": (3000.0, 2200.0), "n3": (1500.0, 1200.0)}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(["feederd", *args], code, out.getvalue(), err.getvalue())


class Feeder:
    """feederd's side of the contract, as a plain MQTT client: its flexibility (retained) and
    ``online`` on every connect, every DR event it receives kept in order, and each answered
    ``accepted`` on its retained ``dr/status``. It reconnects after a broker restart.

    It has no will: a broker shutting down publishes its clients' wills, and the re-split of
    feeders going silent is the core's to test (tests/coordinator), not the session's."""

    def __init__(self, site: str, port: int, clock: FakeClock) -> None:
        self.site = site
        self.port = port
        self.clock = clock
        self.max_kw, self.min_kw = SITES[site]
        self.root = f"{FEEDER_ROOT}/{site}"
        self.received: list[dict[str, Any]] = []
        self.connected = asyncio.Event()
        self.connects = 0
        self.seq = 0

    def flex(self) -> Flexibility:
        self.seq += 1
        mid = (self.max_kw + self.min_kw) / 2
        return Flexibility(
            site=self.site,
            at=self.clock.now(),
            seq=self.seq,
            interval_s=30.0,
            window_s=3600.0,
            import_kw=self.max_kw,
            limit_kw=None,
            min_kw=self.min_kw,
            max_kw=self.max_kw,
            curve=((self.min_kw, 300.0), (mid, 80.0), (self.max_kw, 0.0)),
            health="ok",
            devices_up=12,
            devices=12,
        )

    def event_ids(self) -> list[str]:
        return [str(e["id"]) for e in self.received if e.get("cancel") is not True]

    def cancelled_ids(self) -> list[str]:
        return [str(e["id"]) for e in self.received if e.get("cancel") is True]

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, keepalive=5) as client:
                    await client.subscribe(f"{self.root}/dr/event", qos=1)
                    await client.publish(f"{self.root}/online", b"true", qos=1, retain=True)
                    body = json.dumps(self.flex().to_json())
                    await client.publish(f"{self.root}/flex", body, qos=1, retain=True)
                    self.connects += 1
                    self.connected.set()
                    async for message in client.messages:
                        doc = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                        self.received.append(doc)
                        status = {
                            "recent": [{"id": doc["id"], "result": "accepted", "reason": None}],
                            "events": [],
                        }
                        await client.publish(
                            f"{self.root}/dr/status", json.dumps(status), qos=1, retain=True
                        )
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.05)


class Observer:
    """The operator's client: sends targets, keeps the last message of each topic it reads."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.last: dict[str, Any] = {}
        self.counts: Counter[str] = Counter()
        self.connected = asyncio.Event()
        self.connects = 0
        self.client: aiomqtt.Client | None = None

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, keepalive=5) as client:
                    await client.subscribe(f"{ROOT}/#", qos=1)
                    self.client = client
                    self.connects += 1
                    self.connected.set()
                    async for message in client.messages:
                        topic = str(message.topic)
                        self.counts[topic] += 1
                        self.last[topic] = bytes(message.payload)  # type: ignore[arg-type]
            except aiomqtt.MqttError:
                self.connected.clear()
                self.client = None
                await asyncio.sleep(0.05)

    def doc(self, topic: str) -> Any:
        body = self.last.get(f"{ROOT}/{topic}")
        return None if body is None else json.loads(body)

    def last_decision(self) -> Any:
        """``last`` of the retained ``target/status`` (None before any decision)."""
        doc = self.doc("target/status")
        return None if doc is None else doc["last"]

    async def send(self, payload: dict[str, Any]) -> None:
        await until(self.connected.is_set, "the operator connected")
        assert self.client is not None
        await self.client.publish(f"{ROOT}/target", json.dumps(payload), qos=1)


def fleet_toml(port: int, metrics_port: int) -> str:
    feeders = "".join(f'[[feeders]]\nsite = "{s}"\nrating_kw = 5000.0\n' for s in SITES)
    return (
        f'name = "test"\ntopic_root = "{ROOT}"\nfeeder_root = "{FEEDER_ROOT}"\n'
        "interval_s = 30.0\nsilent_after_s = 90.0\nmax_age_s = 120.0\ndeadband_kw = 1.0\n"
        '[journal]\npath = "journal.sqlite"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nclient_id = "coordinator-test"\n'
        "keepalive_s = 5\n"
        f'[metrics]\naddress = "127.0.0.1"\nport = {metrics_port}\n'
        f'{feeders}[groups]\nsouth = ["n2", "n3"]\n'
    )


@dataclasses.dataclass
class Rig:
    broker: Mosquitto
    config: FleetConfig
    path: Path
    clock: FakeClock
    daemon: FleetDaemon
    feeders: dict[str, Feeder]
    observer: Observer
    stop: asyncio.Event
    running: asyncio.Task[None]

    async def status(self) -> dict[str, Any]:
        return await self.daemon.call(lambda core: core.status())

    async def asked(self, event_id: str) -> set[str]:
        """The feeders the coordinator holds to ``event_id`` (once it has allocated it)."""
        sites: set[str] = set()

        async def allocated() -> bool:
            doc = await self.status()
            sites.update(s for s, f in doc["feeders"].items() if f["event"] == event_id)
            return bool(sites)

        await eventually(allocated, f"the allocation of {event_id}")
        return sites


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, *, start: datetime = T0) -> AsyncIterator[Rig]:
    broker = Mosquitto(tmp_path)
    await broker.start()
    path = tmp_path / "fleet.toml"
    path.write_text(fleet_toml(broker.port, free_port()), encoding="utf-8")
    config = load_fleet(path)
    clock = FakeClock(start)
    mqtt = dataclasses.replace(config.mqtt_settings(), backoff_min_s=0.05, backoff_max_s=0.2)
    feeders = {s: Feeder(s, broker.port, clock) for s in SITES}
    observer = Observer(broker.port)
    tasks = [asyncio.create_task(f.run(), name=f"test.{f.site}") for f in feeders.values()]
    tasks.append(asyncio.create_task(observer.run(), name="test.observer"))
    try:
        async with FleetDaemon.open(config, clock=clock, mqtt=mqtt, ticker=False) as daemon:
            stop = asyncio.Event()
            running = asyncio.create_task(daemon.run(stop), name="test.coordinator")
            r = Rig(broker, config, path, clock, daemon, feeders, observer, stop, running)
            try:
                assert daemon.broker is not None
                await until(daemon.broker.connected.is_set, "the coordinator connected")

                async def all_up() -> bool:
                    await daemon.tick()
                    doc = await r.status()
                    return all(doc["feeders"][s]["state"] == "up" for s in SITES)

                await eventually(all_up, "every feeder's flexibility")
                yield r
            finally:
                stop.set()
                await asyncio.wait({running}, timeout=10)
                await cancel_and_wait([running])
    finally:
        await cancel_and_wait(tasks)
        broker.stop()


def _target(
    target_id: str, kw: float, *, group: str = "all", minutes: float = 60
) -> dict[str, Any]:
    return {
        "id": target_id,
        "group": group,
        "type": "reduce_by",
        "kw": kw,
        "start": T0.isoformat(),
        "end": (T0 + timedelta(minutes=minutes)).isoformat(),
        "priority": 0,
    }


def _limits(feeders: dict[str, Feeder], event_suffix: str) -> dict[str, float]:
    """Each feeder's limit in the event whose id ends with ``event_suffix``."""
    out = {}
    for site, f in feeders.items():
        for e in f.received:
            if str(e["id"]).endswith(event_suffix) and e.get("cancel") is not True:
                out[site] = float(e["kw"])
    return out


async def test_a_target_over_mqtt_becomes_one_event_per_feeder_and_a_decision(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        await r.observer.send(_target("evening", 900.0))
        # no tick of the test's: the target made one due, and it went out at once
        await until(lambda: all(f.event_ids() for f in r.feeders.values()), "every feeder's event")
        await until(lambda: r.observer.last_decision() is not None, "target/status")
        last = r.observer.last_decision()
        assert (last["id"], last["result"], last["source"]) == ("evening", "accepted", "mqtt")
        limits = _limits(r.feeders, "evening:1")
        assert set(limits) == set(SITES)
        for site, kw in limits.items():
            top, low = SITES[site]
            assert low - 1e-6 <= kw <= top + 1e-6
        # the reduction asked is the reduction allocated: what the feeders draw left alone
        # (their max_kw) minus their limits
        assert sum(SITES[s][0] - kw for s, kw in limits.items()) == pytest.approx(900.0, abs=1.0)
        for f in r.feeders.values():
            event = f.received[0]
            assert event["type"] == "import_limit"
            assert event["id"] == "fleet:evening:1"
            assert datetime.fromisoformat(event["end"]) == T0 + timedelta(minutes=60)
        # the fleet status document is retained on <topic_root>/status
        await until(lambda: r.observer.doc("status") is not None, "the fleet status")
        # a target naming a group the fleet does not have: rejected, said on target/status
        await r.observer.send(_target("nowhere", 100.0, group="west"))
        await until(lambda: r.observer.last_decision()["id"] == "nowhere", "the rejection")
        last = r.observer.last_decision()
        assert last["result"] == "rejected"
        assert "west" in last["reason"]
        # garbage on the target topic is decided (rejected) too, and the session goes on
        await until(r.observer.connected.is_set, "operator")
        assert r.observer.client is not None
        await r.observer.client.publish(f"{ROOT}/target", b"\xff not json", qos=1)
        await until(
            lambda: r.observer.doc("target/status")["recent"][-1]["id"] is None, "the garbage"
        )
        assert r.observer.doc("target/status")["recent"][-1]["result"] == "rejected"
        # every feeder got exactly its one event
        assert all(f.event_ids() == ["fleet:evening:1"] for f in r.feeders.values())


async def test_a_broker_restart_reconnects_resubscribes_and_publishes_nothing_twice(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        await r.observer.send(_target("evening", 600.0))
        # least cost: the feeders whose first kW are cheapest are asked, not necessarily all
        asked = await r.asked("fleet:evening:1")
        assert len(asked) >= 2
        await until(lambda: all(r.feeders[s].event_ids() for s in asked), "the first events")
        assert r.daemon.broker is not None
        connects = r.daemon.broker.connects
        before = {s: f.connects for s, f in r.feeders.items()}
        observer = r.observer.connects
        r.broker.stop()
        await until(lambda: not r.daemon.broker.connected.is_set(), "the coordinator down")  # type: ignore[union-attr]
        await r.daemon.tick()  # a tick while the broker is away publishes nothing new
        await r.broker.start()
        await until(lambda: r.daemon.broker.connects > connects, "the coordinator back")  # type: ignore[union-attr]
        await until(
            lambda: all(f.connects > before[s] for s, f in r.feeders.items()), "feeders back"
        )
        await until(lambda: r.observer.connects > observer, "the operator back")
        # the broker lost its retained documents (no persistence): the coordinator's come back
        await until(lambda: r.observer.doc("online") is True, "online again")
        await until(lambda: r.observer.doc("status") is not None, "the status again")
        # its target subscription is back: a cancel and a new target over MQTT both work
        await r.observer.send({"id": "evening", "cancel": True})
        await until(
            lambda: all(r.feeders[s].cancelled_ids() for s in asked), "the cancels after restart"
        )
        await r.observer.send(_target("late", 300.0, group="south"))
        late = await r.asked("fleet:late:1")
        assert late
        assert late <= {"n2", "n3"}
        await until(
            lambda: all("fleet:late:1" in r.feeders[s].event_ids() for s in late), "new events"
        )
        for f in r.feeders.values():
            # nothing twice: each event and each cancel reached its feeder once, nothing else
            first = ["fleet:evening:1"] if f.site in asked else []
            assert f.event_ids() == first + (["fleet:late:1"] if f.site in late else [])
            assert f.cancelled_ids() == first
        assert sum(SITES[s][0] - kw for s, kw in _limits(r.feeders, "late:1").items()) == (
            pytest.approx(300.0, abs=1.0)
        )


async def test_a_coordinator_restarted_mid_event_reloads_its_journal_and_sends_nothing_again(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        await r.observer.send(_target("evening", 600.0))
        asked = await r.asked("fleet:evening:1")
        await until(lambda: all(r.feeders[s].event_ids() for s in asked), "the first events")
        before = {s: list(f.received) for s, f in r.feeders.items()}
        r.stop.set()  # the first coordinator goes away mid-event
        await asyncio.wait({r.running}, timeout=10)
        assert r.running.done()
        mqtt = dataclasses.replace(r.config.mqtt_settings(), backoff_min_s=0.05)
        async with FleetDaemon.open(r.config, clock=r.clock, mqtt=mqtt, ticker=False) as again:
            stop = asyncio.Event()
            running = asyncio.create_task(again.run(stop), name="test.coordinator.again")
            try:

                async def all_up() -> bool:
                    await again.tick()
                    doc = await again.call(lambda core: core.status())
                    return all(doc["feeders"][s]["state"] == "up" for s in SITES)

                await eventually(all_up, "every feeder's flexibility, after the restart")
                for _ in range(3):
                    await again.tick()
                doc = await again.call(lambda core: core.status())
                # it knows the target and what each feeder holds, from its journal ...
                assert [t["id"] for t in doc["targets"]] == ["evening"]
                held = {s for s, f in doc["feeders"].items() if f["event"] == "fleet:evening:1"}
                assert held == asked
                # ... and sent nothing again: every feeder has what it had
                assert {s: list(f.received) for s, f in r.feeders.items()} == before
            finally:
                stop.set()
                await asyncio.wait({running}, timeout=10)
                await cancel_and_wait([running])


async def test_stop_without_a_signal_publishes_offline_and_ends(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        await until(lambda: r.observer.doc("online") is True, "online")
        r.stop.set()
        done, _ = await asyncio.wait({r.running}, timeout=10)
        assert r.running in done
        assert r.running.exception() is None
        # a clean goodbye, not the will: the broker is still up and says so
        await until(lambda: r.observer.doc("online") is False, "online = false")


async def test_status_and_target_add_work_on_the_running_coordinators_journal(
    tmp_path: Path,
) -> None:
    # the CLI stamps a target on the system clock: the test's clock starts there
    async with rig(tmp_path, start=datetime.now(UTC)) as r:
        endpoint = MetricsEndpoint()
        endpoint.follow(r.config, r.daemon.metrics)
        try:
            # a target from the CLI, into the journal: the next tick takes it up
            now = datetime.now(UTC)
            add = cli(
                "coordinate", "target", "add", "--config", str(r.path), "--id", "cli-1",
                "--type", "import_limit", "--kw", "5500", "--group", "all",
                "--end", (now + timedelta(minutes=30)).isoformat(),
            )  # fmt: skip
            assert add.returncode == 0, add.stderr
            assert add.stdout == "accepted cli-1\n"
            await r.daemon.tick()
            await until(
                lambda: all("fleet:cli-1:1" in f.event_ids() for f in r.feeders.values()),
                "the CLI target's events",
            )
            listed = cli("coordinate", "target", "list", "--config", str(r.path))
            assert listed.returncode == 0, listed.stderr
            assert "cli-1" in listed.stdout
            assert "import_limit" in listed.stdout
            status = cli("coordinate", "status", "--config", str(r.path))
            assert status.returncode == 0, status.stderr
            out = status.stdout
            assert "coordinator running, broker connected" in out
            for site in SITES:
                assert site in out
            assert "cli-1" in out
            doc = json.loads(cli("coordinate", "status", "--config", str(r.path), "--json").stdout)
            feeders = doc["status"]["feeders"]
            assert sum(feeders[s]["limit_kw"] for s in SITES) == pytest.approx(5500.0, abs=1.0)
            assert doc["metrics"]["mqtt_connected"] == 1.0
            # a rejected target from the CLI: one line, exit 2, nothing published
            bad = cli(
                "coordinate", "target", "add", "--config", str(r.path), "--id", "x y",
                "--type", "reduce_by", "--kw", "10", "--end", now.isoformat(),
            )  # fmt: skip
            assert bad.returncode == 2
            assert bad.stderr.count("\n") == 1
            assert "rejected" in bad.stderr
        finally:
            endpoint.close()
        # the coordinator stopped and its endpoint gone: status still reads the journal
        r.stop.set()
        await asyncio.wait({r.running}, timeout=10)
        status = cli("coordinate", "status", "--config", str(r.path))
        assert status.returncode == 0, status.stderr
        assert "not answering" in status.stdout
        assert "cli-1" in status.stdout


async def test_a_burst_larger_than_the_incoming_queue_is_decided_in_full(tmp_path: Path) -> None:
    """A queue of two: what it drops was not acknowledged, and the persistent session has the
    broker deliver it again after the reconnect that follows: every message ends in a
    decision, none is lost (QoS 1 is at least once: a message whose acknowledgement the
    reconnect cut off may be decided twice, and a target decided twice is the same decision)."""
    broker = Mosquitto(tmp_path)
    await broker.start()
    path = tmp_path / "fleet.toml"
    path.write_text(
        fleet_toml(broker.port, free_port()).replace("keepalive_s = 5", "queue_size = 2"),
        encoding="utf-8",
    )
    config = load_fleet(path)
    mqtt = dataclasses.replace(config.mqtt_settings(), backoff_min_s=0.05, backoff_max_s=0.2)
    assert mqtt.queue_size == 2
    observer = Observer(broker.port)
    watching = asyncio.create_task(observer.run(), name="test.observer")
    burst = 40
    try:
        async with FleetDaemon.open(config, clock=FakeClock(T0), mqtt=mqtt, ticker=False) as d:
            stop = asyncio.Event()
            running = asyncio.create_task(d.run(stop), name="test.coordinator")
            try:
                assert d.broker is not None
                await until(d.broker.connected.is_set, "the coordinator connected")
                await until(observer.connected.is_set, "the operator connected")
                assert observer.client is not None
                client = observer.client
                # all at once (the broker's in-flight window, 20, at a time to the coordinator);
                # each one refused (no such group), each a decision
                await asyncio.gather(
                    *(
                        client.publish(
                            f"{ROOT}/target", json.dumps(_target(f"b{k}", 10.0, group="x")), qos=1
                        )
                        for k in range(burst)
                    )
                )

                want = {f"b{k}" for k in range(burst)}

                async def decided() -> bool:
                    got = await d.call(lambda core: {x.id for x in core.journal.decisions(500)})
                    return got == want

                await eventually(decided, f"a decision for each of {burst} targets")
                assert d.broker.dropped_in > 0  # the queue did overflow, and nothing was lost
                assert d.broker.connects >= 2  # the session was renewed to get them back
            finally:
                stop.set()
                await asyncio.wait({running}, timeout=10)
                await cancel_and_wait([running])
    finally:
        await cancel_and_wait([watching])
        broker.stop()
