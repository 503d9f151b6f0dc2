"""The coordinator's MQTT session (aiomqtt 2.x): the feeders' flexibility, DR statuses and
online flags in, system targets in, per-feeder DR events and the retained status documents out.

Around aiomqtt's pitfalls (DESIGN.md §6), as the feeder's intake (``controller.dr.intake``):

- one persistent session: a fixed client id and ``clean_session=False``, so the broker keeps
  the subscriptions and queues QoS 1 messages while the coordinator restarts;
- every message ends in the handler's decision (the core, on its worker thread) and only then
  is acknowledged (manual ack): a message the coordinator never decided on is redelivered;
- the incoming queue is bounded (``queue_size``); a message it must drop was not acknowledged,
  so once the queue has drained the session is reconnected and the broker redelivers it;
- what goes out is bounded too: per-feeder events and cancels in order, each taken off the queue
  only once the broker has acknowledged it (never lost to a disconnect; an event cancelled
  before it was ever sent is not sent at all, nor its cancel); each retained document
  (``target/status``, ``status``) in one slot, the latest replacing one not yet sent, and sent
  again on every connect;
- a keepalive notices a dead broker on an idle connection; the will says ``<topic_root>/online``
  ``false`` when the coordinator dies, ``true`` is published on every connect;
- reconnection is this loop's: back off with jitter (``devices.backoff.Backoff``), subscribe
  again on every connect; a failed attempt is classified (``connect_failure_kind``) and logged
  once per cause, not once per retry.

Which topic is which kind (``flex``, ``dr_status``, ``online``, ``target``) is ``topic_kind``,
a plain function of the fleet's settings.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiomqtt
import structlog

from controller.dr.mqtt_common import (
    MqttSettings,
    connect_failed,
    session_client,
)
from devices.backoff import Backoff
from devices.tasks import cancel_and_wait

if TYPE_CHECKING:
    from coordinator.core import Outgoing
    from coordinator.metrics import FleetMetrics
    from coordinator.settings import FleetSettings

__all__ = ["FleetBroker", "Handler", "topic_kind"]

log = structlog.get_logger("feederd.fleet.mqtt")

Handler = Callable[[str, str, bytes], Awaitable[None]]
"""``handler(kind, topic, payload)``: decide on one message (returns once decided)."""

KINDS = ("flex", "dr_status", "online", "target")
PUBLISH_WINDOW = 200
STOP_FLIGHT_S = 1.0
"""How long a stop waits for the publishes in flight to be acknowledged: one cut short would
stay queued and go out again in the goodbye (a feeder hearing an event twice)."""
"""Events and cancels in flight at once (bounded by ``queue_size``, the client's outgoing
queue): a re-split of a thousand feeders goes out in a few round trips, not a thousand."""


def topic_kind(fleet: FleetSettings, topic: str) -> str | None:
    """What a message on ``topic`` is (one of ``KINDS``), or ``None`` for a topic the
    coordinator did not subscribe to."""
    if topic == fleet.target_topic:
        return "target"
    site = fleet.site_of(topic)
    if site is None:
        return None
    rest = topic[len(fleet.feeder_root) + len(site) + 2 :]
    return {"flex": "flex", "dr/status": "dr_status", "online": "online"}.get(rest)


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


@dataclass(eq=False, slots=True)
class _Pending:
    """An event or cancel not yet acknowledged by the broker (``sending``: in flight now)."""

    topic: str
    payload: dict[str, Any]
    qos: int
    sending: bool = False


class _Redeliver(aiomqtt.MqttError):
    """End the session so the broker redelivers what the full queue dropped."""


class FleetBroker:
    """The session: ``run(stop)`` until stopped; ``publish(outgoings)`` from the event loop."""

    def __init__(
        self,
        settings: MqttSettings,
        fleet: FleetSettings,
        handler: Handler,
        *,
        on_connection: Callable[[bool], Awaitable[None]] | None = None,
        metrics: FleetMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.fleet = fleet
        self.handler = handler
        self.on_connection = on_connection
        self.metrics = metrics
        self.connected = asyncio.Event()
        self.connects = 0
        self.published = 0
        """Messages the broker acknowledged (events, cancels and retained documents)."""
        self.dropped_in = 0
        self.dropped_out = 0
        self._events: collections.deque[_Pending] = collections.deque()
        self._events_max = settings.queue_size + 4 * len(fleet.feeders)
        self._window = max(1, min(settings.queue_size, PUBLISH_WINDOW))
        self._retained: dict[str, bytes] = {}
        self._retained_due: set[str] = set()
        self._wake = asyncio.Event()
        self._quiet = asyncio.Event()  # no publish in flight
        self._quiet.set()
        self._dropped_unacked = False
        self._burst_in = 0
        self._was_up = False
        self._down_logged = False
        self._last_failure: tuple[str, str] | None = None

    @property
    def filters(self) -> tuple[str, ...]:
        """What the session subscribes to (QoS 1), on every connect. ``online`` first: the
        broker sends each subscription's retained messages in turn, so a feeder's retained
        ``online`` is known before its retained flexibility is judged."""
        f = self.fleet
        return (f.online_filter, f.flex_filter, f.dr_status_filter, f.target_topic)

    @property
    def pending(self) -> int:
        """Events and cancels not yet acknowledged by the broker."""
        return len(self._events)

    # -- publishing (from the event loop; never blocks) ------------------------------------

    def publish(self, outgoing: Iterable[Outgoing]) -> None:
        """Queue what the core returned: a retained document replaces the one of its topic not
        yet sent; events and cancels go in order. A cancel of an event still queued takes
        both out (the feeder never heard of it)."""
        for out in outgoing:
            if out.retain:
                self._retained[out.topic] = _encode(out.payload)
                self._retained_due.add(out.topic)
                continue
            if out.payload.get("cancel") is True and self._unsent(out.topic, out.payload.get("id")):
                continue
            if len(self._events) >= self._events_max:
                oldest = self._events[0]
                if not oldest.sending:  # (one in flight is the broker's already)
                    self._events.popleft()
                    self.dropped_out += 1
                    log.error(
                        "fleet_event_dropped",
                        reason="outgoing queue full (the broker has been away too long)",
                        topic=oldest.topic,
                        id=oldest.payload.get("id"),
                    )
            self._events.append(_Pending(out.topic, out.payload, out.qos))
        self._wake.set()

    def _unsent(self, topic: str, event_id: object) -> bool:
        """Take the queued, never-sent event ``event_id`` on ``topic`` out; whether it was
        (one in flight may have reached the feeder: its cancel goes too)."""
        for item in self._events:
            p = item.payload
            if (
                item.topic == topic
                and not item.sending
                and p.get("id") == event_id
                and p.get("cancel") is not True
            ):
                self._events.remove(item)
                return True
        return False

    # -- the connection loop ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, serve and reconnect with backoff until ``stop`` is set."""
        s = self.settings
        backoff = Backoff(s.backoff_min_s, s.backoff_max_s)
        while not stop.is_set():
            self._was_up = False
            try:
                await self._session(stop)
            except _Redeliver:
                log.info("mqtt_reconnect", reason="to have dropped messages redelivered")
                await self._set_connected(False, reason="stopping")
                continue
            except aiomqtt.MqttError as err:
                if self._was_up:
                    await self._set_connected(False, reason=str(err) or type(err).__name__)
                else:
                    self._connect_failed(err)
            if stop.is_set():
                break
            if self._was_up:
                backoff.succeeded()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff.failed())
        await self._set_connected(False, reason="stopping")

    def _client(self) -> aiomqtt.Client:
        return session_client(self.settings, self._incoming_dropped)

    async def _session(self, stop: asyncio.Event) -> None:
        s = self.settings
        async with self._client() as client:
            for topic in self.filters:
                await client.subscribe(topic, qos=1)
            await client.publish(s.online_topic, b"true", qos=1, retain=True)
            self.connects += 1
            self._was_up = True
            self._retained_due = set(self._retained)
            await self._set_connected(True)
            name = f"feederd-fleet[{self.fleet.name}].mqtt"
            tasks = {
                asyncio.create_task(self._read(client), name=f"{name}.read"),
                asyncio.create_task(self._write(client), name=f"{name}.write"),
                asyncio.create_task(stop.wait(), name=f"{name}.stop"),
            }
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                if stop.is_set():  # publishes in flight end first: cut, they would go again
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._quiet.wait(), STOP_FLIGHT_S)
            finally:
                await cancel_and_wait(tasks)
            for task in done:
                if not task.cancelled() and (err := task.exception()) is not None:
                    raise err
            if stop.is_set():  # what is queued, each within a second, then the goodbye
                with contextlib.suppress(aiomqtt.MqttError):
                    await self._drain(client, timeout_s=1.0)
                    await client.publish(s.online_topic, b"false", qos=1, retain=True, timeout=1.0)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            payload = message.payload
            raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
            kind = topic_kind(self.fleet, topic)
            if kind is not None:
                try:
                    await self.handler(kind, topic, bytes(raw))
                except Exception as err:  # a bug in the core: said, and acknowledged all the same
                    log.error(
                        "fleet_message_failed",
                        kind=kind,
                        topic=topic,
                        error=f"{type(err).__name__}: {err}",
                    )
            if message.qos > 0:
                client._client.ack(message.mid, message.qos)
            if self._dropped_unacked and client._queue.empty():
                self._dropped_unacked = False
                raise _Redeliver

    async def _write(self, client: aiomqtt.Client) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._drain(client, timeout_s=10.0)

    async def _drain(self, client: aiomqtt.Client, *, timeout_s: float) -> None:
        """Events in order, up to ``PUBLISH_WINDOW`` in flight at once (the client sends them
        in order, the broker keeps the order of one client's messages), each off the queue once
        acknowledged; then the retained ones. One that failed stays, for the next session."""
        while self._events:
            batch = list(itertools.islice(self._events, self._window))
            for item in batch:
                item.sending = True
            self._quiet.clear()
            try:
                results = await asyncio.gather(
                    *(
                        client.publish(
                            i.topic, _encode(i.payload), qos=i.qos, retain=False, timeout=timeout_s
                        )
                        for i in batch
                    ),
                    return_exceptions=True,
                )
            finally:
                for item in batch:
                    item.sending = False
            failed: BaseException | None = None
            for item, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    failed = failed or result
                else:
                    self._events.remove(item)
                    self.published += 1
            self._quiet.set()
            if failed is not None:
                raise failed
        while self._retained_due:
            topic = next(iter(self._retained_due))
            body = self._retained[topic]
            await client.publish(topic, body, qos=1, retain=True, timeout=timeout_s)
            if self._retained.get(topic) is body:  # not replaced meanwhile
                self._retained_due.discard(topic)
            self.published += 1

    # -- state -----------------------------------------------------------------------------

    def _incoming_dropped(self) -> None:
        self.dropped_in += 1
        if not self._dropped_unacked:
            log.warning(
                "mqtt_messages_dropped",
                direction="in",
                reason="incoming queue full: redelivered after a reconnect",
            )
        self._dropped_unacked = True
        self._burst_in += 1

    def _connect_failed(self, err: aiomqtt.MqttError) -> None:
        cause = connect_failed(self.settings, err, self._last_failure)
        if cause != self._last_failure:
            self._last_failure = cause
            self._down_logged = True
        self.connected.clear()
        if self.metrics is not None:
            self.metrics.mqtt_connected.set(0)

    async def _set_connected(self, up: bool, *, reason: str = "") -> None:
        s = self.settings
        was = self.connected.is_set()
        if up:
            self.connected.set()
            self._down_logged = False
            self._last_failure = None
            log.info("mqtt_connected", host=s.host, port=s.port, client_id=s.client_id)
        else:
            if reason == "stopping":
                if was:
                    log.info("mqtt_closed", host=s.host)
            elif was or not self._down_logged:
                log.error("mqtt_disconnected", host=s.host, reason=reason)
                self._down_logged = True
            self.connected.clear()
        if self.metrics is not None:
            self.metrics.mqtt_connected.set(1 if up else 0)
        if self.on_connection is not None and up != was:
            await self.on_connection(up)
