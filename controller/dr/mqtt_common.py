"""What every MQTT session of the package shares: its settings, the broker URL, and why a
connection attempt failed. Apart from ``controller.dr.intake`` so that the fleet coordinator
(``coordinator.broker``) uses the same without the feeder's intake."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt
import structlog
from aiomqtt.exceptions import MqttConnectError

__all__ = [
    "CONNECT_HINTS",
    "MqttSettings",
    "connect_failed",
    "connect_failure_kind",
    "parse_mqtt_url",
    "session_client",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSettings:
    host: str
    port: int = 1883
    topic_root: str
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    client_id: str | None = None
    keepalive_s: int = 30
    queue_size: int = 1000
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0

    @property
    def event_topic(self) -> str:
        return f"{self.topic_root}/dr/event"

    @property
    def status_topic(self) -> str:
        return f"{self.topic_root}/dr/status"

    @property
    def telemetry_topic(self) -> str:
        return f"{self.topic_root}/telemetry"

    @property
    def plan_topic(self) -> str:
        return f"{self.topic_root}/plan"

    @property
    def price_topic(self) -> str:
        return f"{self.topic_root}/price"

    @property
    def price_status_topic(self) -> str:
        return f"{self.topic_root}/price/status"

    @property
    def flex_topic(self) -> str:
        return f"{self.topic_root}/flex"

    @property
    def online_topic(self) -> str:
        return f"{self.topic_root}/online"


def parse_mqtt_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` -> (host, port, tls)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"not an mqtt:// or mqtts:// URL: {url!r}")
    if "@" in rest:
        raise ValueError("credentials do not belong in a URL; use the config's password_file")
    host, _, port_text = rest.rstrip("/").partition(":")
    if not host:
        raise ValueError(f"no host in {url!r}")
    tls = scheme == "mqtts"
    try:
        port = int(port_text) if port_text else (8883 if tls else 1883)
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"bad port in {url!r}")
    return host, port, tls


CONNECT_HINTS = {
    "refused": "the broker refused the login: check mqtt.username and mqtt.password_file",
    "tls": "TLS handshake failed: check mqtt.tls.ca_file (the broker's CA) and the client"
    " certificate",
    "network": "the broker is unreachable: check mqtt.host and mqtt.port",
}


def connect_failure_kind(err: BaseException) -> str:
    """Why a connection attempt failed: ``refused`` (the broker answered CONNACK with an error,
    e.g. a bad username or password, or not authorised), ``tls`` (certificate or handshake) or
    ``network`` (anything else: refused port, timeout, DNS)."""
    if isinstance(err, MqttConnectError):
        return "refused"
    cause: BaseException | None = err
    while cause is not None:  # aiomqtt raises MqttError(str(exc)) from None: the context stays
        if isinstance(cause, ssl.SSLError):
            return "tls"
        cause = cause.__cause__ or cause.__context__
    return "network"


def session_client(settings: MqttSettings, on_dropped: Callable[[], None]) -> aiomqtt.Client:
    """A client for one session on ``settings`` (the intake's, the coordinator's): a fixed
    client id gets a persistent session (what it had not acknowledged is redelivered), the
    queues are bounded (``on_dropped`` is told of each incoming message the full queue
    discards, unacknowledged), the will says ``<root>/online`` = ``false``, and QoS 1 messages
    are acknowledged by the caller once decided (``client._client.ack``), not on arrival."""
    s = settings

    class _CountingQueue(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            if self.full():
                on_dropped()
            super().put_nowait(item)  # raises QueueFull: aiomqtt discards the message

    client = aiomqtt.Client(
        s.host,
        s.port,
        username=s.username,
        password=s.password,
        identifier=s.client_id,
        clean_session=None if s.client_id is None else False,
        keepalive=s.keepalive_s,
        timeout=10.0,
        max_queued_incoming_messages=s.queue_size,
        max_queued_outgoing_messages=s.queue_size,
        queue_type=_CountingQueue,
        tls_context=s.tls,
        will=aiomqtt.Will(s.online_topic, b"false", qos=1, retain=True),
    )
    client._client.manual_ack_set(True)  # paho option that aiomqtt does not expose
    return client


def connect_failed(
    settings: MqttSettings,
    err: BaseException,
    last: tuple[str, str] | None,
    *,
    again: bool = False,
) -> tuple[str, str]:
    """A connection attempt that failed: logged (``mqtt_connect_failed``, with a hint) when its
    cause differs from ``last`` (one line per problem, not one per retry) or ``again``; returns
    the cause (kind, detail) to pass as ``last`` next time."""
    kind = connect_failure_kind(err)
    cause = (kind, str(err) or type(err).__name__)
    if cause != last or again:
        structlog.get_logger("feederd.mqtt").error(
            "mqtt_connect_failed",
            host=settings.host,
            port=settings.port,
            reason=kind,
            error=cause[1],
            hint=CONNECT_HINTS[kind],
        )
    return cause
