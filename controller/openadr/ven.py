"""The OpenADR 2.0b VEN: one VTN's events in, opt responses and telemetry out.

Built on openleadr's client for the protocol (messages, schema, XML signatures), but driven by
feederd: its own task (``run``) registers, polls at the frequency the VTN asks (within
``poll_min_s``; ``poll_s`` until the VTN says), and reports on the daemon's clock, one reading per
control interval, instead of openleadr's wall-clock scheduler. Every answer from the VTN is
checked before it is used: TLS against ``ca_file`` with the VEN's client certificate, the XML
schema, and the signature against the VTN's fingerprint (an unsigned answer is refused). A
failed or refused exchange is logged once per reason (``openadr_message_refused``), counted
(``feederd_openadr_refused_total{reason}``) and retried with a bounded backoff; the next success
registers again. Nothing the VTN sends is unbounded: an answer is read up to ``MAX_BODY_BYTES``,
a message's events and an event's intervals are capped.

Events (``controller.openadr.signals``) become feederd DR events through the DR service, the
same way as an MQTT payload: validated, persisted, decided and published on ``dr/status``. So
they survive a restart, and a VTN outage leaves them in force. An event the VEN cannot take is
answered with its OpenADR status code and reason, and nothing of it is stored. An event held
while the VTN's list no longer carries it is cancelled (OpenADR's implicit cancellation).

Opting: the VEN opts in to an event it accepts, then follows the plan's prediction
(``DrService.prediction``): when the plan predicts a shortfall on any of the event's intervals it
opts out, with the figures in the log and on ``dr/status``; when the plan holds it again, back in.
An event opted out of stays in force (the feeder does what it can); an operator cancels it with
``feederd event cancel``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol

import aiohttp
import structlog
from lxml.etree import XMLSyntaxError  # type: ignore[import-untyped]
from openleadr import OpenADRClient, objects, utils
from openleadr.messaging import create_message, parse_message, validate_xml_schema
from signxml.exceptions import InvalidSignature
from signxml.verifier import XMLVerifier

from controller.clock import Clock
from controller.dr.events import EventBounds, EventRejected, parse_payload
from controller.dr.overlap import StoredEvent
from controller.horizon import EventOutlook
from controller.openadr.metrics import VenMetrics
from controller.openadr.settings import VenSettings
from controller.openadr.signals import (
    DEPLOYMENT_ERROR,
    INVALID_DATA,
    NOT_ALLOWED,
    EventKey,
    Mapped,
    Refused,
    Window,
    event_key,
    map_event,
    parse_feederd_id,
)
from controller.records import CycleRecord

__all__ = ["MAX_BODY_BYTES", "MAX_EVENTS", "EventSink", "Ven", "VtnRefused"]

log = structlog.get_logger("feederd.openadr")

MAX_BODY_BYTES = 1 << 20
"""An answer from the VTN is read up to 1 MiB; a longer one is refused."""
MAX_EVENTS = 32
"""Events taken from one oadrDistributeEvent; the rest are refused."""
BACKOFF_MAX_S = 60.0
MAX_READINGS = 2880
"""Readings kept per report request between sends (a day at 30 s)."""
USAGE = "TELEMETRY_USAGE"
STATUS = "TELEMETRY_STATUS"
_STATUS_POINTS = ("online", "import_limit_kw", "devices_up", "dr_events_active")


class VtnRefused(Exception):
    """An exchange with the VTN that failed, or whose answer cannot be trusted or read."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class _Held:
    """A VTN event the VEN holds: its feederd events and the opt last sent."""

    key: EventKey
    ids: tuple[str, ...]
    window: Window | None
    opt: str = "optIn"
    request_id: str | None = None


@dataclass(slots=True)
class _ReportRequest:
    request_id: str
    specifier_id: str
    name: str
    r_ids: tuple[str, ...]
    every_s: float
    """Send every this many seconds (0: once, at the next reading)."""
    granularity_s: float = 0.0
    """One reading per this many seconds (never finer than the control interval)."""
    due: datetime | None = None
    next_sample: datetime | None = None
    readings: list[tuple[datetime, str, float]] = field(default_factory=list)


class _Client(OpenADRClient):  # type: ignore[misc]
    """openleadr's client with feederd's transport: the prebuilt TLS context, bounded reads,
    and every failure raised as ``VtnRefused`` with its reason (openleadr logs and returns
    ``(None, {})``, which cannot be told from an empty answer)."""

    def __init__(
        self,
        settings: VenSettings,
        on_create_report: Callable[[Mapping[str, Any]], Awaitable[None]],
    ) -> None:
        super().__init__(
            ven_name=settings.ven_name,
            vtn_url=settings.vtn_url,
            ven_id=settings.ven_id,
            vtn_fingerprint=settings.vtn_fingerprint,
            show_fingerprint=False,
            disable_signature=not settings.sign,
        )
        self.settings = settings
        self.on_create_report = on_create_report
        # the answers' schema and signature checks run here, never on the loop's thread
        self._checker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="feederd-openadr"
        )
        self._replay = _Replay()
        self._create_message = partial(
            create_message,
            cert=settings.cert_pem,
            key=settings.key_pem,
            passphrase=settings.passphrase,
            disable_signature=not settings.sign,
        )

    client_session: aiohttp.ClientSession | None

    async def _ensure_client_session(self) -> None:
        if self.client_session is None or self.client_session.closed:
            self.client_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.settings.tls),
                headers={"content-type": "application/xml"},
                timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout_s),
            )

    async def close(self) -> None:
        if self.client_session is not None and not self.client_session.closed:
            await self.client_session.close()
        self._checker.shutdown(wait=False, cancel_futures=True)

    async def _perform_request(self, service: str, message: str) -> tuple[str, dict[str, Any]]:
        await self._ensure_client_session()
        session = self.client_session
        assert session is not None
        url = f"{self.vtn_url}/{service}"
        try:
            async with session.post(url, data=message) as reply:
                chunks: list[bytes] = []
                size = 0
                async for chunk in reply.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise VtnRefused(
                            "schema", f"{service}: answer larger than {MAX_BODY_BYTES} bytes"
                        )
                    chunks.append(chunk)
                content = b"".join(chunks)
                if reply.status != 200:
                    text = content[:200].decode("utf-8", "replace")
                    raise VtnRefused(
                        "http", f"{service}: HTTP {reply.status} {' '.join(text.split())}"
                    )
        except VtnRefused:
            raise
        except (
            aiohttp.ClientConnectorCertificateError,
            aiohttp.ClientSSLError,
            ssl.SSLError,
        ) as err:
            raise VtnRefused("tls", f"{service}: {err}") from None
        except TimeoutError:
            raise VtnRefused(
                "timeout", f"{service}: no answer within {self.settings.request_timeout_s:g} s"
            ) from None
        except (aiohttp.ClientError, OSError) as err:
            raise VtnRefused("connection", f"{service}: {type(err).__name__}: {err}") from None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._checker, _verified, service, content, self.vtn_fingerprint, self._replay
        )

    async def create_report(self, response_payload: dict[str, Any]) -> None:
        """Reports are scheduled by ``Ven`` on the daemon's clock (see ``Ven._create_report``)."""
        await self.on_create_report(response_payload)


REPLAY_WINDOW_S = 60.0
"""A signed answer's ReplayProtect timestamp is within this of the wall clock (either way)."""
_NONCES_MAX = 10_000
_DSIG = "{http://www.w3.org/2000/09/xmldsig#}"
_DSP = "{http://openadr.org/oadr-2.0b/2012/07/xmldsig-properties}"


class _Replay:
    """The (timestamp, nonce) pairs of the signed answers seen within ``REPLAY_WINDOW_S``: a
    repeated one is a replay. Confined to the VEN's checking thread (openleadr's own cache and
    verifier are module globals, unsafe beside a VTN in the same process)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[datetime, str], None] = {}

    def check(self, tree: Any, service: str) -> None:
        try:
            stamp = utils.parse_datetime(tree.findtext(f".//{_DSP}timestamp"))
            nonce = tree.findtext(f".//{_DSP}nonce")
        except Exception:
            stamp, nonce = None, None
        if not isinstance(stamp, datetime) or not nonce:
            raise VtnRefused("signature", f"{service}: no valid ReplayProtect in the signature")
        now = datetime.now(UTC)
        if abs((now - stamp).total_seconds()) > REPLAY_WINDOW_S:
            raise VtnRefused(
                "signature",
                f"{service}: signed at {stamp.isoformat()}, more than {REPLAY_WINDOW_S:g} s "
                "from this box's clock (a replay, or a clock to set right)",
            )
        if (stamp, nonce) in self.seen:
            raise VtnRefused("signature", f"{service}: a replayed answer (nonce seen before)")
        cutoff = now - timedelta(seconds=REPLAY_WINDOW_S)
        for old in [k for k in self.seen if k[0] < cutoff]:
            del self.seen[old]
        if len(self.seen) >= _NONCES_MAX:
            self.seen.pop(next(iter(self.seen)))
        self.seen[(stamp, nonce)] = None


def _verified(
    service: str, content: bytes, fingerprint: str | None, replay: _Replay
) -> tuple[str, dict[str, Any]]:
    """The answer's type and payload, once its schema and signature hold (run on the VEN's
    checking thread, with a verifier of its own)."""
    lowered = content.lower()
    if b"<!doctype" in lowered or b"<!entity" in lowered:  # OpenADR has no DTD: no entities
        raise VtnRefused("schema", f"{service}: a DOCTYPE or ENTITY declaration is not allowed")
    try:
        tree = validate_xml_schema(content)
    except XMLSyntaxError as err:
        raise VtnRefused("schema", f"{service}: not a valid OpenADR 2.0b message: {err}") from None
    except Exception as err:
        raise VtnRefused("schema", f"{service}: unreadable answer: {type(err).__name__}") from None
    if fingerprint:
        cert_el = tree.find(f".//{_DSIG}X509Certificate")
        if cert_el is None or not (cert_el.text or "").strip():
            raise VtnRefused("unsigned", f"{service}: the VTN's answer carries no signature")
        cert = utils.extract_pem_cert(tree)
        try:
            got = utils.certificate_fingerprint(cert)
        except Exception as err:
            raise VtnRefused("signature", f"{service}: unreadable certificate: {err}") from None
        if got != fingerprint:
            raise VtnRefused(
                "fingerprint",
                f"{service}: signed by a certificate with fingerprint {got}, expected "
                f"{fingerprint} (openadr.vtn_fingerprint)",
            )
        try:
            XMLVerifier().verify(tree, x509_cert=cert.encode(), expect_references=2)
        except InvalidSignature as err:
            raise VtnRefused(
                "signature", f"{service}: the signature does not verify: {err}"
            ) from None
        except Exception as err:
            raise VtnRefused("signature", f"{service}: {type(err).__name__}: {err}") from None
        replay.check(tree, service)
    try:
        message_type, payload = parse_message(content)
    except Exception as err:
        raise VtnRefused("schema", f"{service}: cannot parse: {type(err).__name__}") from None
    return str(message_type), payload if isinstance(payload, dict) else {}


class _Decided(Protocol):
    @property
    def result(self) -> str: ...
    @property
    def reason(self) -> str | None: ...


class EventSink(Protocol):
    """Where the VEN's events go, and what it reads back: the feeder's DR service
    (``controller.dr.service.DrService``) or the fleet coordinator's targets."""

    @property
    def bounds(self) -> EventBounds: ...

    def events_now(self) -> Sequence[StoredEvent]: ...

    async def submit_async(self, payload: dict[str, Any], *, source: str) -> _Decided: ...

    def prediction(self, event_id: str) -> EventOutlook | None: ...


class Ven:
    """The VEN task and its listeners (``record`` for each interval, ``status_changed`` when
    ``dr/status`` changes)."""

    def __init__(
        self,
        settings: VenSettings,
        *,
        dr: EventSink,
        clock: Clock,
        metrics: VenMetrics | None = None,
        site: str = "",
    ) -> None:
        self.settings = settings
        self.dr = dr
        self.clock = clock
        self.metrics = metrics
        self.site = site
        self.client = _Client(settings, self._create_report)
        self.registered = False
        self.poll_s = settings.poll_s
        self.held: dict[str, _Held] = {}
        self.requests: dict[str, _ReportRequest] = {}
        self._wake = asyncio.Event()
        self._outbox: list[tuple[_Held, str, str]] = []
        self._failures = 0
        self._last_refusal: str | None = None
        self._hold_off = False
        self._reporting: set[asyncio.Future[None]] = set()
        self._resume_held()
        self._add_reports()
        self._set_gauge("openadr_registered", 0)

    # -- state ----------------------------------------------------------------------------

    def _resume_held(self) -> None:
        """The VTN events the journal holds (after a restart): their feederd events stay in
        force, and a modification or a cancellation from the VTN finds them."""
        for stored in self.dr.events_now():
            key = parse_feederd_id(stored.event.id)
            if key is None or stored.source != "openadr":
                continue
            h = self.held.get(key.event_id)
            if h is None or h.key.modification < key.modification:
                h = _Held(key=key, ids=(), window=None)
                self.held[key.event_id] = h
            if h.key == key:
                h.ids = (*h.ids, stored.event.id)
                w = Window(stored.event.start, stored.event.end)
                h.window = (
                    w
                    if h.window is None
                    else Window(min(h.window.start, w.start), max(h.window.end, w.end))
                )

    def _add_reports(self) -> None:
        c = self.client
        c.add_report(
            callback=lambda: None,
            resource_id=self.site or "feeder",
            measurement="real_power",
            report_name=USAGE,
            report_specifier_id="feederd-telemetry-usage",
            r_id="head_import_kw",
            unit="W",
            scale="k",
            report_duration=timedelta(hours=24),
            sampling_rate=timedelta(seconds=1),
        )
        for point in _STATUS_POINTS:
            c.add_report(
                callback=lambda: None,
                resource_id=self.site or "feeder",
                report_name=STATUS,
                report_specifier_id="feederd-telemetry-status",
                r_id=point,
                report_duration=timedelta(hours=24),
                sampling_rate=timedelta(seconds=1),
            )

    def _set_gauge(self, name: str, value: float) -> None:
        if self.metrics is not None:
            getattr(self.metrics, name).set(value)

    def _count(self, name: str, *labels: str) -> None:
        if self.metrics is not None:
            getattr(self.metrics, name).labels(*labels).inc()

    # -- the task -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Register, poll, send what is queued; until ``stop``. Never raises for the VTN's
        sake: every failure is logged, counted and retried."""
        try:
            while not stop.is_set():
                try:
                    if not self.registered:
                        await self._register()
                    else:
                        await self._poll()
                    await self._send_outbox()
                    self._ok()
                    wait = self.poll_s
                except VtnRefused as err:
                    self._refused(err)
                    wait = min(self.poll_s * 2 ** min(self._failures, 6), BACKOFF_MAX_S)
                except Exception as err:  # a bug, or an answer openleadr cannot handle
                    log.error("openadr_internal_error", error=f"{type(err).__name__}: {err}")
                    self._refused(VtnRefused("internal", f"{type(err).__name__}: {err}"))
                    wait = min(self.poll_s * 2 ** min(self._failures, 6), BACKOFF_MAX_S)
                if self._hold_off:  # the VTN cancelled the registration: not at once again
                    wait, self._hold_off = BACKOFF_MAX_S, False
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_first(stop.wait(), self._wake.wait()), timeout=wait)
        finally:
            self._set_gauge("openadr_registered", 0)
            for task in list(self._reporting):
                task.cancel()
            await self.client.close()

    def _ok(self) -> None:
        if self._failures:
            log.info("openadr_vtn_back", after_failures=self._failures)
        self._failures = 0
        self._last_refusal = None
        self._set_gauge("openadr_vtn_up", 1)

    def _refused(self, err: VtnRefused) -> None:
        self._failures += 1
        self._count("openadr_refused", err.reason)
        self._set_gauge("openadr_vtn_up", 0)
        if self.registered:
            self.registered = False
            self._set_gauge("openadr_registered", 0)
        if self._last_refusal != err.reason:  # once per reason, not once per retry
            event = (
                "openadr_vtn_unreachable"
                if err.reason in ("connection", "timeout")
                else ("openadr_message_refused")
            )
            log.warning(
                event, reason=err.reason, detail=err.detail[:300], vtn=self.settings.vtn_url
            )
        self._last_refusal = err.reason

    async def _register(self) -> None:
        c = self.client
        _t, reply = await c.query_registration()
        request_id = (reply.get("response") or {}).get("request_id")
        c.registration_id = None
        await c.create_party_registration(
            ven_id=self.settings.ven_id or c.ven_id, request_id=request_id
        )
        if not c.registration_id:
            raise VtnRefused("http", "the VTN did not register this VEN (no registrationID)")
        freq = c.poll_frequency
        if isinstance(freq, timedelta) and freq.total_seconds() > 0:
            self.poll_s = min(max(freq.total_seconds(), self.settings.poll_min_s), 3600.0)
        self.requests.clear()
        await c.register_reports(c.reports)
        self.registered = True
        self._set_gauge("openadr_registered", 1)
        log.info(
            "openadr_registered",
            ven_id=c.ven_id,
            registration_id=c.registration_id,
            poll_s=self.poll_s,
            vtn=self.settings.vtn_url,
        )
        _t, events = await c.request_event()
        if _t == "oadrDistributeEvent":
            await self._distribute(events)

    async def _poll(self) -> None:
        c = self.client
        kind, payload = await c.poll()
        if kind == "oadrDistributeEvent":
            await self._distribute(payload)
        elif kind == "oadrCreateReport":
            await self._create_report(payload)
        elif kind == "oadrCancelReport":
            await self._cancel_report(payload)
        elif kind == "oadrRequestReregistration":
            await c.send_response(service="EiRegisterParty")
            self.registered = False
            log.info("openadr_reregistration_requested")
        elif kind == "oadrCancelPartyRegistration":
            await self._ack(
                "EiRegisterParty",
                "oadrCanceledPartyRegistration",
                payload.get("request_id"),
                registration_id=c.registration_id,
            )
            self.registered = False
            self._hold_off = True
            self._set_gauge("openadr_registered", 0)
            log.warning(
                "openadr_registration_cancelled_by_vtn",
                retry_s=BACKOFF_MAX_S,
                held_events=sorted(self.held),
            )
        elif kind == "oadrRegisterReport":  # the VTN's own reports: none wanted
            await self._ack(
                "EiReport", "oadrRegisteredReport", payload.get("request_id"), report_requests=[]
            )
        elif kind not in ("oadrResponse", ""):
            log.info("openadr_message_ignored", type=kind)

    async def _ack(self, service: str, message_type: str, request_id: Any, **fields: Any) -> None:
        """Answer a VTN's request with ``message_type`` (response 200, its request id)."""
        c = self.client
        message = c._create_message(
            message_type,
            response={"response_code": 200, "response_description": "OK", "request_id": request_id},
            ven_id=c.ven_id,
            **fields,
        )
        await c._perform_request(service, message)

    # -- events ---------------------------------------------------------------------------

    async def _distribute(self, payload: Mapping[str, Any]) -> None:
        """Decide on every event of an oadrDistributeEvent and answer them in one
        oadrCreatedEvent."""
        events = payload.get("events") or []
        if not isinstance(events, list):
            events = []
        request_id = payload.get("request_id") or (payload.get("response") or {}).get("request_id")
        responses: list[dict[str, Any]] = []
        listed: set[str] = set()
        for i, event in enumerate(events):
            if not isinstance(event, Mapping):
                continue
            try:
                key = event_key(event)
            except Refused as err:
                self._reject(None, err, responses, request_id)
                continue
            listed.add(key.event_id)
            if i >= MAX_EVENTS:
                self._reject(
                    key,
                    Refused(NOT_ALLOWED, f"more than {MAX_EVENTS} events in one message"),
                    responses,
                    request_id,
                )
                continue
            answer = await self._decide(event, key)
            if answer is not None and event.get("response_required", "always") == "always":
                code, reason, opt = answer
                responses.append(_response(key, code, reason, opt, request_id))
        for eid in [e for e in self.held if e not in listed]:
            await self._cancel(
                self.held[eid], why="the VTN no longer lists it (implicit cancellation)"
            )
        if responses:
            c = self.client
            message = c._create_message(
                "oadrCreatedEvent",
                response={
                    "response_code": 200,
                    "response_description": "OK",
                    "request_id": request_id,
                },
                event_responses=responses,
                ven_id=c.ven_id,
            )
            await c._perform_request("EiEvent", message)
            for r in responses:
                self._count("openadr_opts", r["opt_type"])

    def _reject(
        self, key: EventKey | None, err: Refused, responses: list[dict[str, Any]], request_id: Any
    ) -> None:
        code, reason, opt = self._refuse(key, err.code, err.reason)
        if key is not None:
            responses.append(_response(key, code, reason, opt, request_id))

    def _refuse(self, key: EventKey | None, code: int, reason: str) -> tuple[int, str, str]:
        """An event refused: counted, logged, and answered ``optOut`` with the reason."""
        self._count("openadr_events", "rejected")
        log.warning(
            "openadr_event_rejected",
            vtn_event=None if key is None else key.event_id,
            code=code,
            reason=reason,
        )
        return code, reason, "optOut"

    async def _decide(self, event: Mapping[str, Any], key: EventKey) -> tuple[int, str, str] | None:
        """(status code, description, opt) for one event; ``None``: no answer (completed)."""
        held = self.held.get(key.event_id)
        now = self.clock.now()
        try:
            mapped = map_event(
                event,
                now=now,
                simple=self.settings.simple,
                priority=self.settings.priority,
                market_contexts=self.settings.market_contexts,
            )
        except Refused as err:
            if held is not None and held.key == key:  # a repeat of one taken before
                return 200, "OK", held.opt
            return self._refuse(key, err.code, err.reason)
        if mapped.status == "completed":
            if held is not None:
                self.held.pop(key.event_id, None)
            return None
        if held is not None and held.key == key and not mapped.cancelled:
            return 200, "OK", held.opt  # the same event again: nothing changes
        if mapped.cancelled:
            if held is not None:
                await self._cancel(held, why="cancelled by the VTN")
            return 200, "OK", "optIn"
        if held is not None and held.key.modification > key.modification:
            return (
                NOT_ALLOWED,
                f"modification {key.modification} is older than {held.key.modification}",
                held.opt,
            )
        clash = self._overlap(mapped)
        if clash is not None:
            return self._refuse(key, NOT_ALLOWED, clash)
        try:  # every payload checked before any is stored: all or nothing
            for p in mapped.payloads:
                parse_payload(p, now=now, bounds=self.dr.bounds)
        except EventRejected as err:
            return self._refuse(key, INVALID_DATA, err.reason)
        taken: list[str] = []
        for p in mapped.payloads:
            decision = await self.dr.submit_async(p, source="openadr")
            if decision.result != "accepted":
                for done in taken:
                    await self.dr.submit_async({"id": done, "cancel": True}, source="openadr")
                return self._refuse(key, DEPLOYMENT_ERROR, decision.reason or "refused")
            taken.append(p["id"])
        new = _Held(key=key, ids=tuple(taken), window=mapped.window, opt="optIn")
        if held is not None:
            await self._cancel(
                held, why=f"replaced by modification {key.modification}", count=False
            )
            self._count("openadr_events", "modified")
            log.info(
                "openadr_event_modified",
                vtn_event=key.event_id,
                modification=key.modification,
                ids=list(taken),
            )
        else:
            self._count("openadr_events", "accepted")
            log.info(
                "openadr_event_accepted",
                vtn_event=key.event_id,
                modification=key.modification,
                ids=list(taken),
            )
        self.held[key.event_id] = new
        new.opt = self._opt_for(new)[0]
        return 200, "OK", new.opt

    def _overlap(self, mapped: Mapped) -> str | None:
        w = mapped.window
        if w is None or not mapped.payloads:
            return None
        for other in self.held.values():
            o = other.window
            if other.key.event_id == mapped.key.event_id or o is None:
                continue
            if w.start < o.end and o.start < w.end:
                return (
                    f"overlaps VTN event {other.key.event_id!r} ({o.start.isoformat()} to "
                    f"{o.end.isoformat()}); this VEN holds one VTN event at a time"
                )
        return None

    async def _cancel(self, held: _Held, *, why: str, count: bool = True) -> None:
        for fid in held.ids:
            await self.dr.submit_async({"id": fid, "cancel": True}, source="openadr")
        if self.held.get(held.key.event_id) is held:
            del self.held[held.key.event_id]
        if count:
            self._count("openadr_events", "cancelled")
            log.info("openadr_event_cancelled", vtn_event=held.key.event_id, why=why)

    # -- opting ---------------------------------------------------------------------------

    def _opt_for(self, held: _Held) -> tuple[str, str]:
        """(opt, reason) from the plan's predictions for the event's intervals."""
        short = [
            p for fid in held.ids if (p := self.dr.prediction(fid)) is not None and not p.ready
        ]
        if not short:
            return "optIn", "participating"
        kw = max(p.shortfall_kw for p in short)
        kwh = sum(p.shortfall_kwh for p in short)
        return "optOut", (
            f"the plan predicts a shortfall of {kw:.0f} kW ({kwh:.0f} kWh) with "
            f"{getattr(self.dr, 'resources', 'the batteries, PV and loads it has')}"
        )

    def status_changed(self) -> None:
        """``dr/status`` changed (a prediction among others): revise the opts that flip."""
        for held in list(self.held.values()):
            opt, reason = self._opt_for(held)
            if opt != held.opt:
                held.opt = opt
                self._outbox.append((held, opt, reason))
                log.warning("openadr_opt", vtn_event=held.key.event_id, opt=opt, reason=reason) if (
                    opt == "optOut"
                ) else log.info("openadr_opt", vtn_event=held.key.event_id, opt=opt, reason=reason)
                self._wake.set()

    async def _send_outbox(self) -> None:
        c = self.client
        while self._outbox:
            held, opt, reason = self._outbox[0]
            code = 200
            message = c._create_message(
                "oadrCreatedEvent",
                response={"response_code": 200, "response_description": "OK", "request_id": None},
                event_responses=[_response(held.key, code, reason, opt, held.request_id or "")],
                ven_id=c.ven_id,
            )
            await c._perform_request("EiEvent", message)
            self._outbox.pop(0)
            self._count("openadr_opts", opt)

    # -- reports --------------------------------------------------------------------------

    async def _create_report(self, payload: Mapping[str, Any]) -> None:
        """The VTN asks for reports: keep each request (sent on the daemon's clock from the
        intervals' readings) and acknowledge them."""
        c = self.client
        code = 200
        for req in payload.get("report_requests") or []:
            try:
                spec = req["report_specifier"]
                rid = str(req["report_request_id"])
                sid = str(spec["report_specifier_id"])
                report = next((r for r in c.reports if r.report_specifier_id == sid), None)
                if report is None:
                    code = 452
                    log.warning("openadr_report_unknown", report_specifier_id=sid[:80])
                    continue
                points = tuple(
                    str(p["r_id"])
                    for p in spec.get("specifier_payloads") or []
                    if isinstance(p, Mapping)
                )
                known = {d.r_id for d in report.report_descriptions}
                granularity = spec.get("granularity") or timedelta(0)
                back = spec.get("report_back_duration") or timedelta(0)
                every = max(back.total_seconds(), granularity.total_seconds(), 0.0)
                self.requests[rid] = _ReportRequest(
                    request_id=rid,
                    specifier_id=sid,
                    name=report.report_name.replace("METADATA_", ""),
                    r_ids=tuple(p for p in points if p in known) or tuple(sorted(known)),
                    every_s=every,
                    granularity_s=max(granularity.total_seconds(), 0.0),
                )
                log.info("openadr_report_requested", report=report.report_name, every_s=every)
            except (KeyError, TypeError, AttributeError):
                code = 454
        message = c._create_message(
            "oadrCreatedReport",
            response={
                "response_code": code,
                "response_description": "OK" if code == 200 else "ERROR",
                "request_id": payload.get("request_id")
                or (payload.get("response") or {}).get("request_id"),
            },
            ven_id=c.ven_id,
            pending_reports=[{"report_request_id": r} for r in self.requests],
        )
        await c._perform_request("EiReport", message)

    async def _cancel_report(self, payload: Mapping[str, Any]) -> None:
        rid = str(payload.get("report_request_id"))
        self.requests.pop(rid, None)
        await self._ack(
            "EiReport", "oadrCanceledReport", payload.get("request_id"), report_request_id=rid
        )

    def record(self, record: CycleRecord) -> None:
        """One interval: its readings join each report request, and those due are sent."""
        now = self.clock.now()
        values = {
            "head_import_kw": record.import_kw,
            "online": 1.0 if record.status.dispatched else 0.0,
            "import_limit_kw": record.import_limit_kw,
            "devices_up": float(record.devices_up),
            "dr_events_active": float(len(record.dr_events)),
        }
        due = False
        for req in self.requests.values():
            if req.next_sample is None or now >= req.next_sample:  # at the VTN's granularity
                req.next_sample = now + timedelta(seconds=req.granularity_s)
                for r_id in req.r_ids:
                    v = values.get(r_id)
                    if v is not None:
                        req.readings.append((now, r_id, float(v)))
                del req.readings[:-MAX_READINGS]
            if req.due is None:
                req.due = now + timedelta(seconds=req.every_s)
            if now >= req.due:
                due = True
        if due:
            task = asyncio.ensure_future(self._send_reports(now))
            self._reporting.add(task)
            task.add_done_callback(self._reporting.discard)
            task.add_done_callback(_reported)

    async def _send_reports(self, now: datetime) -> None:
        c = self.client
        for req in list(self.requests.values()):
            if req.due is None or now < req.due or not req.readings:
                continue
            readings, req.readings = req.readings, []
            req.due = now + timedelta(seconds=req.every_s) if req.every_s > 0 else None
            report = objects.Report(
                report_request_id=req.request_id,
                report_specifier_id=req.specifier_id,
                report_name=req.name,
                intervals=[
                    objects.ReportInterval(
                        dtstart=at, report_payload=objects.ReportPayload(r_id=r_id, value=v)
                    )
                    for at, r_id, v in readings
                ],
            )
            report.dtstart = readings[0][0]
            message = c._create_message(
                "oadrUpdateReport", ven_id=c.ven_id, request_id=_request_id(), reports=[report]
            )
            try:
                await c._perform_request("EiReport", message)
            except VtnRefused as err:
                self._count("openadr_reports", req.name, "failed")
                self._refused(err)
                continue
            self._count("openadr_reports", req.name, "sent")
            if req.every_s <= 0:
                self.requests.pop(req.request_id, None)


def _reported(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and (err := task.exception()) is not None:
        log.error("openadr_report_failed", error=f"{type(err).__name__}: {err}")


def _request_id() -> str:
    return str(utils.generate_id())


def _response(key: EventKey, code: int, reason: str, opt: str, request_id: Any) -> dict[str, Any]:
    return {
        "response_code": code,
        # the reason goes to the VTN with a refusal and with an opt-out
        "response_description": "OK" if code == 200 and opt == "optIn" else reason[:200],
        "request_id": request_id,
        "event_id": key.event_id,
        "modification_number": key.modification,
        "opt_type": opt,
    }


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
