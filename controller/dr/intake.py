"""MQTT intake for DR events, and the status and telemetry publisher (aiomqtt 2.x).

Usable as a library: ``MqttIntake(settings, handler)`` where ``handler(payload)`` decides on
one ``<root>/dr/event`` payload (``DrService.submit`` in the daemon; any callable, sync or
async, in a test or a scenario). Around aiomqtt's pitfalls (DESIGN.md §6):

- every message ends in a decision of the handler, and is acknowledged once the handler has
  returned (an accepted event is on disk by then), whatever the payload: a handler that raises
  is a bug, logged and counted as a rejection, and the message is acknowledged all the same, so
  a poisonous message can never hold the broker's in-flight window;
- incoming and outgoing queues are bounded (``queue_size``). A message the client must drop is
  counted (``feederd_mqtt_dropped_messages_total{direction}``) and logged. An incoming QoS 1
  message dropped that way was not acknowledged: once the queue has drained the intake
  reconnects, and the persistent session (``clean_session=False`` with a fixed client id) has
  the broker redeliver it: processed or redelivered, never lost. Keep ``queue_size`` at least
  the broker's in-flight window (Mosquitto's ``max_inflight_messages``, 20) and drops do not
  happen at all;
- ``dr/status`` is retained and complete: only the latest is published (never a backlog of
  stale ones); telemetry is a bounded queue that drops its oldest, counted;
- ``plan`` (``publish_plan``, the document of ``controller.plan.Plan``) is retained, QoS 1,
  and held in one slot: a plan not yet sent is replaced by a newer one, never queued behind
  it; it is sent again on every connect (a broker restarted without persistence has lost it);
- the TLS context is built once by the caller, before the loop runs;
- a keepalive notices a dead broker on an idle connection;
- reconnection is this loop's job: back off with jitter (capped), resubscribe on every connect.
- a failed connection attempt is classified (``refused``: bad credentials, ``tls``: certificate
  or handshake, ``network``), counted in ``feederd_mqtt_connect_failures_total{reason}`` and
  logged once per cause (``mqtt_connect_failed`` with a hint), not once per retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import structlog

from controller.dr.mqtt_common import (
    MqttSettings,
    connect_failed,
    connect_failure_kind,
    parse_mqtt_url,
    session_client,
)
from controller.metrics import Metrics
from controller.records import CycleRecord
from devices.backoff import Backoff
from devices.tasks import cancel_and_wait

__all__ = ["MqttIntake", "MqttSettings", "connect_failure_kind", "parse_mqtt_url"]

log = structlog.get_logger("feederd.mqtt")


STATUS_EVERY_S = 0.2
"""The least time between two ``dr/status`` publications (each is the complete, latest one)."""


class _Redeliver(aiomqtt.MqttError):
    """End the session so the broker redelivers what the full queue dropped."""


class MqttIntake:
    """Subscribes to ``<root>/dr/event``; publishes ``dr/status`` (retained) and telemetry."""

    def __init__(
        self,
        settings: MqttSettings,
        handler: Callable[[bytes], Any],
        *,
        metrics: Metrics | None = None,
        initial_status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.handler = handler
        self.metrics = metrics
        self.initial_status = initial_status
        self.connected = asyncio.Event()
        self.connects = 0
        self._out: asyncio.Queue[tuple[str, bytes, int, bool]] = asyncio.Queue(
            maxsize=settings.queue_size
        )
        self._status_due = False  # dr/status changed since it was last published
        self.routes: dict[str, Callable[[bytes], Any]] = {}
        """Other topics taken in (``route``), each with its handler (the price feed)."""
        self._retained: dict[str, bytes] = {}  # the latest retained document of each topic
        self._retained_due: set[str] = set()
        self._wake = asyncio.Event()
        self.dropped_in = 0
        self._dropped_unacked = False
        self._burst_in = 0
        self._out_dropping = False
        self._down_logged = False
        self._was_up = False
        self._last_failure: tuple[str, str] | None = None

    # -- publishing (non-blocking, bounded) -----------------------------------------------

    def status_changed(self) -> None:
        """``dr/status`` changed: the writer publishes the latest (built then, from
        ``initial_status``), at most every ``STATUS_EVERY_S``, however often it changes."""
        self._status_due = True
        self._wake.set()

    def _status_body(self) -> bytes | None:
        if not self._status_due or self.initial_status is None:
            return None
        self._status_due = False
        return json.dumps(self.initial_status(), separators=(",", ":")).encode()

    def publish_plan(self, doc: dict[str, Any]) -> None:
        """The latest plan (``Plan.to_json()``), retained on ``<root>/plan`` (QoS 1): one not
        yet sent is replaced, never queued behind it (``publish_retained``)."""
        self.publish_retained(self.settings.plan_topic, doc)

    def route(self, topic: str, handler: Callable[[bytes], Any]) -> None:
        """Also take in ``topic`` (QoS 1, subscribed on every connect): each message ends in
        ``handler`` (sync or async), acknowledged after it as a DR event is."""
        self.routes[topic] = handler

    def publish_retained(self, topic: str, doc: dict[str, Any]) -> None:
        """The latest document of ``topic``, published retained (QoS 1) by the writer; one not
        yet sent is replaced, never queued; sent again on every connect."""
        self._retained[topic] = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
        self._retained_due.add(topic)
        self._wake.set()

    async def _publish_retained(self, client: aiomqtt.Client, *, flush: bool = False) -> None:
        """Each retained document not yet sent (``flush``: stopping, each within a second)."""
        while self._retained_due:
            topic = self._retained_due.pop()
            body = self._retained.get(topic)
            if body is not None:
                await client.publish(
                    topic, body, qos=1, retain=True, timeout=1.0 if flush else 10.0
                )

    def publish_telemetry(self, record: CycleRecord) -> None:
        doc = {
            "cycle": record.cycle,
            "status": record.status,
            "at": datetime.now(UTC).isoformat(),
            "import_kw": record.import_kw,
            "import_limit_kw": record.import_limit_kw,
            "export_limit_kw": record.export_limit_kw,
            "losses_kw": record.losses_kw,
            "curtailed_kw": record.curtailed_kw,
            "v_min_pu": record.v_min_pu,
            "devices_up": record.devices_up,
            "setpoints_kw": dict(record.setpoints_kw),
        }
        item = (self.settings.telemetry_topic, json.dumps(doc, separators=(",", ":")).encode())
        while True:
            try:
                self._out.put_nowait((*item, 0, False))
                break
            except asyncio.QueueFull:
                self._out.get_nowait()  # drop the oldest
                self._dropped(
                    "out",
                    "telemetry queue full: the oldest intervals dropped",
                    first=not self._out_dropping,
                )
                self._out_dropping = True
        self._wake.set()

    def _dropped(self, direction: str, what: str, *, first: bool) -> None:
        """Count a drop; say so once a burst (on its first drop), not once a message."""
        if self.metrics is not None:
            self.metrics.mqtt_dropped.labels(direction).inc()
        if first:
            log.warning("mqtt_messages_dropped", direction=direction, reason=what)

    def _incoming_dropped(self) -> None:
        """aiomqtt's incoming queue was full: the message (not acknowledged) is redelivered
        after the reconnect that follows once the queue has drained."""
        self.dropped_in += 1
        first = not self._dropped_unacked
        self._dropped_unacked = True
        self._burst_in += 1
        self._dropped("in", "incoming queue full: redelivered after a reconnect", first=first)

    # -- the connection loop --------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, serve and reconnect with backoff until ``stop`` is set."""
        s = self.settings
        backoff = Backoff(s.backoff_min_s, s.backoff_max_s)
        while not stop.is_set():
            self._was_up = False
            try:
                await self._session(stop)
            except _Redeliver:
                log.info(
                    "mqtt_reconnect",
                    reason="to have the dropped messages redelivered",
                    dropped=self._burst_in,
                )
                self._burst_in = 0
                self._set_connected(False, reason="stopping")
                continue
            except aiomqtt.MqttError as err:
                if self._was_up:
                    self._set_connected(False, reason=str(err))
                else:
                    self._connect_failed(err)
            if stop.is_set():
                break
            if self._was_up:  # it was connected: start the backoff again from the bottom
                backoff.succeeded()
            delay = backoff.failed()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        self._set_connected(False, reason="stopping")

    def _client(self) -> aiomqtt.Client:
        return session_client(self.settings, self._incoming_dropped)

    async def _session(self, stop: asyncio.Event) -> None:
        s = self.settings
        async with self._client() as client:
            await client.subscribe(s.event_topic, qos=1)
            for topic in self.routes:
                await client.subscribe(topic, qos=1)
            await client.publish(s.online_topic, b"true", qos=1, retain=True)
            self.connects += 1
            self._was_up = True
            self._set_connected(True)
            self._retained_due = set(self._retained)
            self.status_changed()
            name = f"feederd[{s.topic_root}].mqtt"
            tasks = {
                asyncio.create_task(self._read(client), name=f"{name}.read"),
                asyncio.create_task(self._write(client), name=f"{name}.write"),
                asyncio.create_task(stop.wait(), name=f"{name}.stop"),
            }
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait(tasks)
            for task in done:
                if not task.cancelled() and (err := task.exception()) is not None:
                    raise err
            if stop.is_set():
                await self._flush(client)
                await client.publish(s.online_topic, b"false", qos=1, retain=True)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
            handler = self.routes.get(str(message.topic), self.handler)
            try:
                result = handler(bytes(raw))
                if inspect.isawaitable(result):
                    await result
            except Exception as err:  # a bug in the handler: said, counted, and acknowledged
                log.error("dr_event_handler_failed", error=f"{type(err).__name__}: {err}")
                if self.metrics is not None:
                    self.metrics.dr_events.labels("rejected").inc()
            if message.qos > 0:
                client._client.ack(message.mid, message.qos)
            if self._dropped_unacked and client._queue.empty():
                # what was dropped unacknowledged comes back on a new connection
                self._dropped_unacked = False
                raise _Redeliver

    async def _write(self, client: aiomqtt.Client) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        next_status = 0.0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while not self._out.empty():
                topic, body, qos, retain = self._out.get_nowait()
                await client.publish(topic, body, qos=qos, retain=retain)
            self._out_dropping = False  # drained: the next drop starts a new burst
            await self._publish_retained(client)
            if self._status_due:
                wait = next_status - loop.time()
                if wait > 0:  # a burst of decisions: one status for all of them
                    await asyncio.sleep(wait)
                status = self._status_body()
                if status is not None:
                    await client.publish(s.status_topic, status, qos=1, retain=True)
                next_status = loop.time() + STATUS_EVERY_S

    async def _flush(self, client: aiomqtt.Client) -> None:
        s = self.settings
        status = self._status_body()
        if status is not None:
            await client.publish(s.status_topic, status, qos=1, retain=True, timeout=1.0)
        await self._publish_retained(client, flush=True)
        while not self._out.empty():
            topic, body, qos, retain = self._out.get_nowait()
            await client.publish(topic, body, qos=qos, retain=retain, timeout=1.0)

    def _connect_failed(self, err: aiomqtt.MqttError) -> None:
        """A connection attempt that never got as far as the session: counted every time,
        logged when the cause changes (one line per problem, not one per retry)."""
        cause = connect_failed(
            self.settings, err, self._last_failure, again=self.connected.is_set()
        )
        if self.metrics is not None:
            self.metrics.mqtt_connect_failures.labels(reason=cause[0]).inc()
        if cause != self._last_failure:
            self._down_logged = True
        self._last_failure = cause
        self.connected.clear()
        if self.metrics is not None:
            self.metrics.mqtt_connected.set(0)

    def _set_connected(self, up: bool, *, reason: str = "") -> None:
        if up:
            self.connected.set()
            self._down_logged = False
            self._last_failure = None
            log.info("mqtt_connected", host=self.settings.host, port=self.settings.port)
        else:
            if reason == "stopping":
                if self.connected.is_set():
                    log.info("mqtt_closed", host=self.settings.host)
            elif self.connected.is_set() or not self._down_logged:
                log.error("mqtt_disconnected", host=self.settings.host, reason=reason)
                self._down_logged = True
            self.connected.clear()
        if self.metrics is not None:
            self.metrics.mqtt_connected.set(1 if up else 0)
