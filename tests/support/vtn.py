"""A real OpenADR 2.0b VTN on loopback, for testing a VEN: openleadr's own ``OpenADRServer``.

``Vtn`` runs openleadr's server in the test's event loop (``async with Vtn(pki) as vtn``) over
HTTPS with client certificates required, signing every message it sends (XML signatures) and
checking the VEN's: its ``ven_lookup`` knows one VEN, by name and by the fingerprint of its
certificate (``make_pki``: the VEN's certificate serves both its TLS client authentication and
its signatures, as in OpenADR). What the test does to it:

- events: ``add_event`` (SIMPLE levels, LOAD_DISPATCH setpoints or deltas in kW, any other
  signal name, intervals of any duration, in the past or overlapping: the VTN sends what it is
  told), ``modify_event`` (openleadr has no helper: the stored event is changed, its modification
  number bumped and the VEN's queue marked updated, as ``cancel_event`` does), ``cancel_event``;
- what comes back: ``responses`` (each oadrCreatedEvent's event responses: opt, response code
  and description), ``opts`` (oadrCreateOpt: openleadr's VTN leaves that service unmounted, so
  a small one of ours records them), ``registrations``, ``received`` (every message's type and
  the HTTP status the VTN answered), ``reports`` (the values of the reports it asked for at
  ``report_granularity_s``);
- faults: ``stop`` then ``restart`` (an outage: the listener and every connection closed, then
  the same port again, optionally having forgotten the registration), ``tamper`` (the next
  message of a type leaves with its signed body altered after signing, with its signature
  stripped, or cut off halfway), and two variants set at construction: ``signer="impostor"``
  (signs with a certificate the VEN was not told about) and ``https="untrusted"`` (an HTTPS
  certificate from a CA the VEN does not trust).

Time: openleadr's VTN asks for a poll frequency in whole seconds (it writes the duration without
fractions), and keeps each event's status on the wall clock: an event whose end has passed by the
wall clock is sent once as ``completed`` and dropped. A test on a simulated clock keeps that clock
ahead of the wall clock (``tests/controller/openadr_helpers.py``).

openleadr keeps its signer and lookups on the ``VTNService`` class; each ``Vtn`` moves them onto
its own service instances and puts the class back, so two VTNs in one process do not share a
key. Ports come from ``tests.support.net`` (a restart binds the same one again).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import re
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree  # type: ignore[import-untyped]
from openleadr import enums, objects, utils
from openleadr.messaging import create_message
from openleadr.server import OpenADRServer
from openleadr.service import VTNService, service
from openleadr.service import handler as oadr_handler

from tests.support.net import free_port
from tests.support.tls import Certs, make_certs

__all__ = [
    "EventResponse",
    "OptMessage",
    "Pki",
    "Received",
    "Registration",
    "ReportValue",
    "Tamper",
    "Vtn",
    "make_pki",
]

PATH = "/OpenADR2/Simple/2.0b"
_DS = "{http://www.w3.org/2000/09/xmldsig#}"
_MESSAGE = re.compile(rb"<(?:[\w-]+:)?(oadr[A-Z]\w*)[\s>/]")
_CLASS_STATE = ("_create_message", "ven_lookup", "fingerprint_lookup", "verify_message_signatures")


# -- certificates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Every certificate a VEN test needs: ``tls`` (``make_certs``: the CA, the VTN's HTTPS
    certificate, the VEN's certificate and key) and, beside it, an HTTPS certificate for
    127.0.0.1 from a CA nobody trusts. The VTN signs with its HTTPS certificate (``tls.server``);
    the impostor signs with ``tls.rogue``, a certificate the VEN was never told about."""

    tls: Certs
    untrusted_server_cert: Path
    untrusted_server_key: Path

    @property
    def ven_cert(self) -> Path:
        return self.tls.client_cert

    @property
    def ven_key(self) -> Path:
        return self.tls.client_key

    @property
    def vtn_signing(self) -> tuple[Path, Path]:
        return self.tls.server_cert, self.tls.server_key

    @property
    def impostor_signing(self) -> tuple[Path, Path]:
        return self.tls.rogue_cert, self.tls.rogue_key

    @property
    def ven_fingerprint(self) -> str:
        return fingerprint(self.ven_cert)

    @property
    def vtn_fingerprint(self) -> str:
        """What the VEN is told: the fingerprint of the VTN's signing certificate."""
        return fingerprint(self.vtn_signing[0])


def fingerprint(cert: Path) -> str:
    """openleadr's short fingerprint (the last 10 bytes of the SHA-256 of the DER)."""
    return str(utils.certificate_fingerprint(cert.read_text()))


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write(d: Path, name: str, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = d / f"{name}.pem", d / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _untrusted_https(d: Path) -> tuple[Path, Path]:
    """A CA nobody was given, and the HTTPS certificate for 127.0.0.1 it signed: valid in
    every way but trust."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "untrusted-vtn-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(d, "untrusted-ca", ca, ca_key)
    return _write(d, "untrusted-server", leaf, key)


def make_pki(d: Path) -> Pki:
    """Write the certificates into ``d`` (keys unencrypted, 0600)."""
    tls = make_certs(d)
    cert, key = _untrusted_https(d)
    return Pki(tls=tls, untrusted_server_cert=cert, untrusted_server_key=key)


# -- what the VTN saw ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EventResponse:
    """One eventResponse of an oadrCreatedEvent: the VEN's answer to one event."""

    event_id: str
    modification_number: int
    opt_type: str  # optIn | optOut
    response_code: int
    response_description: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class OptMessage:
    """One oadrCreateOpt (an opt schedule or an opt on an event, with its reason)."""

    opt_id: str
    opt_type: str
    opt_reason: str | None
    event_id: str | None
    modification_number: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    ven_id: str
    ven_name: str
    registration_id: str
    fingerprint: str | None
    """Of the TLS client certificate the registration came with."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    """One request that reached the VTN: its message type and the HTTP status answered."""

    message: str | None
    service: str
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportValue:
    """One value of a report the VTN requested, as delivered in an oadrUpdateReport."""

    report: str  # TELEMETRY_USAGE | TELEMETRY_STATUS | ...
    r_id: str
    resource_id: str | None
    measurement: str | None
    at: dt.datetime
    value: Any


Interval = tuple[dt.datetime, dt.timedelta | float, float]
"""(start, duration (a timedelta or seconds; 0 is sent as PT0S), payload value)."""

Tamper = Literal["signature", "unsigned", "malformed"]


@dataclass
class _Armed:
    kind: Tamper
    message: str
    left: int


@service("EiOpt")
class _OptService(VTNService):  # type: ignore[misc]
    """oadrCreateOpt, recorded and acknowledged (openleadr's own OptService is a stub that it
    does not mount)."""

    def __init__(self, vtn_id: str, record: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(vtn_id)
        self._record = record

    @oadr_handler("oadrCreateOpt")  # type: ignore[untyped-decorator]
    async def create_opt(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self._record(payload)
        return "oadrCreatedOpt", {"opt_id": payload.get("opt_id")}

    @oadr_handler("oadrCancelOpt")  # type: ignore[untyped-decorator]
    async def cancel_opt(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "oadrCanceledOpt", {"opt_id": payload.get("opt_id")}


# -- the VTN ---------------------------------------------------------------------------------


class Vtn:
    """openleadr's ``OpenADRServer`` on ``https://127.0.0.1:<port>``, for one VEN."""

    def __init__(
        self,
        pki: Pki,
        *,
        ven_name: str = "feeder-7",
        ven_id: str = "ven-feeder-7",
        vtn_id: str = "TEST-VTN",
        poll_s: int = 1,
        report_granularity_s: float | None = None,
        report_back_s: float | None = None,
        signer: Literal["vtn", "impostor"] = "vtn",
        https: Literal["trusted", "untrusted"] = "trusted",
        port: int | None = None,
    ) -> None:
        self.pki = pki
        self.ven_name = ven_name
        self.ven_id = ven_id
        self.vtn_id = vtn_id
        self.port = port or free_port()
        self.report_granularity_s = report_granularity_s
        self.report_back_s = report_back_s
        self.responses: list[EventResponse] = []
        self.opts: list[OptMessage] = []
        self.registrations: list[Registration] = []
        self.received: list[Received] = []
        self.reports: list[ReportValue] = []
        self.tampered: list[str] = []
        self.registration_id: str | None = None
        self._armed: list[_Armed] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        if https == "trusted":
            http_cert, http_key = pki.tls.server_cert, pki.tls.server_key
        else:
            http_cert, http_key = pki.untrusted_server_cert, pki.untrusted_server_key
        sign_cert, sign_key = pki.vtn_signing if signer == "vtn" else pki.impostor_signing
        saved = {k: VTNService.__dict__[k] for k in _CLASS_STATE if k in VTNService.__dict__}
        try:
            with warnings.catch_warnings():  # openleadr keys its app by a string (aiohttp warns)
                warnings.simplefilter("ignore", web.NotAppKeyWarning)
                self.server = OpenADRServer(
                    vtn_id=vtn_id,
                    cert=str(sign_cert),
                    key=str(sign_key),
                    http_cert=str(http_cert),
                    http_key=str(http_key),
                    http_ca_file=str(pki.tls.ca),
                    http_host="127.0.0.1",
                    http_port=self.port,
                    http_path_prefix=PATH,
                    requested_poll_freq=dt.timedelta(seconds=poll_s),
                    ven_lookup=self._ven_lookup,
                    show_fingerprint=False,
                )
            self.server.services["opt_service"] = _OptService(vtn_id, self._record_opt)
            signer_fn = partial(
                create_message, cert=sign_cert.read_bytes(), key=sign_key.read_bytes()
            )
            for svc in self.server.services.values():
                svc._create_message = signer_fn
                svc.ven_lookup = self._ven_lookup
                svc.verify_message_signatures = True
        finally:  # openleadr set these on the class: put it back as it was
            for k in _CLASS_STATE:
                if k in saved:
                    setattr(VTNService, k, saved[k])
                elif k in VTNService.__dict__:
                    delattr(VTNService, k)
        self.server.add_handler("on_create_party_registration", self._on_register)
        self.server.add_handler("on_cancel_party_registration", self._on_cancel_registration)
        self.server.add_handler("on_register_report", self._on_register_report)
        events = self.server.services["event_service"]
        self._created_event = events.handlers["oadrCreatedEvent"]
        events.handlers["oadrCreatedEvent"] = self._on_created_event

    # -- lifetime ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}{PATH}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.add_routes(
            [
                web.post(f"{PATH}/{s.__service_name__}", s.handler)
                for s in self.server.services.values()
            ]
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(
            runner,
            "127.0.0.1",
            self.port,
            ssl_context=self.server.ssl_context,
            reuse_address=True,
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        """Close the listener and every connection (the VEN sees the VTN gone)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def restart(self, *, forget_registration: bool = False) -> None:
        """Start again on the same port (after ``stop``); ``forget_registration``: as a VTN that
        lost its registrations, so the VEN is asked to register again."""
        if forget_registration:
            self.registration_id = None
        await self.start()

    async def __aenter__(self) -> Vtn:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- the VEN's settings ------------------------------------------------------------------

    def ven_config(self, **extra: Any) -> dict[str, Any]:
        """The ``[openadr]`` table of a feederd config that talks to this VTN."""
        return {
            "enabled": True,
            "vtn_url": self.url,
            "ven_name": self.ven_name,
            "cert_file": str(self.pki.ven_cert),
            "key_file": str(self.pki.ven_key),
            "ca_file": str(self.pki.tls.ca),
            "vtn_fingerprint": self.pki.vtn_fingerprint,
            **extra,
        }

    # -- events ------------------------------------------------------------------------------

    def add_event(
        self,
        intervals: Sequence[Interval],
        *,
        signal: str = "SIMPLE",
        signal_type: str | None = None,
        event_id: str | None = None,
        market_context: str = "oadr://feederd.test/dr",
        response_required: str = "always",
        priority: int = 0,
    ) -> str:
        """Queue an event of one signal for the VEN; returns its id. SIMPLE is a ``level``;
        LOAD_DISPATCH needs ``signal_type`` (``setpoint`` or ``delta``) and carries kW (real
        power, scale k)."""
        event_id = event_id or f"evt-{next(self._ids)}"
        kind = signal_type or ("level" if signal.upper() == "SIMPLE" else "setpoint")
        measurement = None
        if signal == "LOAD_DISPATCH":
            measurement = objects.Measurement(
                name="powerReal", description="RealPower", unit="W", scale="k",
                power_attributes=objects.PowerAttributes(hertz=50, voltage=230, ac=True),
            )  # fmt: skip
        event = objects.Event(
            event_descriptor=objects.EventDescriptor(
                event_id=event_id,
                modification_number=0,
                market_context=market_context,
                event_status=enums.EVENT_STATUS.FAR,
                priority=priority,
            ),
            active_period=_active_period(intervals),
            event_signals=[
                objects.EventSignal(
                    intervals=_intervals(intervals),
                    signal_name=signal,
                    signal_type=kind,
                    signal_id=f"sig-{event_id}",
                    measurement=measurement,
                )
            ],
            targets=[objects.Target(ven_id=self.ven_id)],
            response_required=response_required,
        )
        self.server.add_raw_event(ven_id=self.ven_id, event=event, callback=_no_callback)
        _zero_as_pt0s(event)  # after openleadr's own arithmetic on the durations
        return event_id

    def modify_event(
        self,
        event_id: str,
        *,
        values: Sequence[float] | None = None,
        intervals: Sequence[Interval] | None = None,
    ) -> int:
        """Change a queued event (new payload values, or new intervals) under a new modification
        number, and mark the VEN's queue updated; returns the modification number."""
        event = self.event(event_id)
        signal = event.event_signals[0]
        if intervals is not None:
            signal.intervals = _intervals(intervals)
            event.active_period = _active_period(intervals)
            _zero_as_pt0s(event)
        if values is not None:
            if len(values) != len(signal.intervals):
                raise ValueError(f"{len(values)} values for {len(signal.intervals)} intervals")
            for interval, value in zip(signal.intervals, values, strict=True):
                interval.signal_payload = value
        number = int(utils.increment_event_modification_number(event))
        event.event_descriptor.modification_date_time = dt.datetime.now(dt.UTC)
        self.server.events_updated[self.ven_id] = True
        return number

    def cancel_event(self, event_id: str) -> int:
        """openleadr's own cancellation; returns the new modification number."""
        self.server.cancel_event(self.ven_id, event_id)
        return int(self.event(event_id).event_descriptor.modification_number)

    def redistribute(self) -> None:
        """Send the VEN every queued event again on its next poll (as after an update)."""
        self.server.events_updated[self.ven_id] = True

    def event(self, event_id: str) -> Any:
        found = utils.find_by(
            self.server.events.get(self.ven_id, []), "event_descriptor.event_id", event_id
        )
        if not found:
            raise KeyError(f"no event {event_id!r} queued for {self.ven_id}")
        return found

    def responses_to(self, event_id: str, modification: int | None = None) -> list[EventResponse]:
        return [
            r
            for r in self.responses
            if r.event_id == event_id
            and (modification is None or r.modification_number == modification)
        ]

    def count(self, message: str) -> int:
        """How many messages of a type reached the VTN and were answered 200."""
        return sum(1 for r in self.received if r.message == message and r.status == 200)

    # -- faults ------------------------------------------------------------------------------

    def tamper(self, kind: Tamper, *, message: str = "oadrDistributeEvent", count: int = 1) -> None:
        """The next ``count`` responses carrying ``message`` leave altered: ``signature``, a value
        in the signed object changed after signing (the signature no longer matches); ``unsigned``,
        the signature removed (the body otherwise as signed); ``malformed``, cut off halfway (not
        XML at all)."""
        self._armed.append(_Armed(kind=kind, message=message, left=count))

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body = await request.read()
        found = _MESSAGE.findall(body[:4096])
        message = next(
            (m.decode() for m in found if m not in (b"oadrPayload", b"oadrSignedObject")), None
        )
        response = await handler(request)
        self.received.append(
            Received(
                message=message, service=request.path.rsplit("/", 1)[-1], status=response.status
            )
        )
        if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
            return response
        for armed in self._armed:
            if armed.left > 0 and f":{armed.message}".encode() in response.body:
                armed.left -= 1
                self.tampered.append(f"{armed.kind}:{armed.message}")
                altered = _tamper(response.body, armed.kind)
                return web.Response(
                    body=altered, status=response.status, content_type="application/xml"
                )
        return response

    # -- openleadr's handlers ----------------------------------------------------------------

    def _ven_lookup(self, ven_id: str) -> dict[str, Any] | None:
        if ven_id != self.ven_id:
            return None
        return {
            "ven_id": self.ven_id,
            "ven_name": self.ven_name,
            "fingerprint": self.pki.ven_fingerprint,
            "registration_id": self.registration_id,
        }

    def _on_register(self, payload: Mapping[str, Any]) -> tuple[str, str] | bool:
        fp = payload.get("fingerprint")
        if payload.get("ven_name") != self.ven_name or fp != self.pki.ven_fingerprint:
            return False
        self.registration_id = f"reg-{next(self._ids)}"
        self.registrations.append(
            Registration(
                ven_id=self.ven_id,
                ven_name=self.ven_name,
                registration_id=self.registration_id,
                fingerprint=fp,
            )
        )
        return self.ven_id, self.registration_id

    def _on_cancel_registration(self, payload: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        registration_id = payload.get("registration_id")
        if registration_id == self.registration_id:
            self.registration_id = None
        return "oadrCanceledPartyRegistration", {
            "registration_id": registration_id,
            "ven_id": payload.get("ven_id"),
        }

    async def _on_created_event(self, payload: dict[str, Any]) -> Any:
        for r in payload.get("event_responses", []):
            self.responses.append(
                EventResponse(
                    event_id=str(r.get("event_id")),
                    modification_number=int(r.get("modification_number", -1)),
                    opt_type=str(r.get("opt_type")),
                    response_code=int(r.get("response_code", 0)),
                    response_description=r.get("response_description"),
                )
            )
        return await self._created_event(payload)

    def _record_opt(self, payload: Mapping[str, Any]) -> None:
        number = payload.get("modification_number")
        self.opts.append(
            OptMessage(
                opt_id=str(payload.get("opt_id")),
                opt_type=str(payload.get("opt_type")),
                opt_reason=payload.get("opt_reason"),
                event_id=payload.get("event_id"),
                modification_number=None if number is None else int(number),
            )
        )

    def _on_register_report(self, report: Mapping[str, Any]) -> list[tuple[Any, ...]] | None:
        """Full mode: one request per description of a TELEMETRY report, at the granularity
        set (none set: no reports requested)."""
        if self.report_granularity_s is None:
            return None
        name = str(report["report_name"]).removeprefix("METADATA_")
        granularity = dt.timedelta(seconds=self.report_granularity_s)
        back = dt.timedelta(seconds=self.report_back_s or self.report_granularity_s)
        requests = []
        for rd in report.get("report_descriptions", []):
            measurement = rd.get("measurement")
            requests.append(
                (
                    rd["r_id"],
                    partial(
                        self._collect,
                        name,
                        rd["r_id"],
                        (rd.get("report_data_source") or {}).get("resource_id"),
                        measurement.get("description") if isinstance(measurement, dict) else None,
                    ),
                    granularity,
                    back,
                )
            )
        return requests

    def _collect(
        self,
        report: str,
        r_id: str,
        resource_id: str | None,
        measurement: str | None,
        values: Sequence[tuple[dt.datetime, Any]],
    ) -> None:
        for at, value in values:
            self.reports.append(
                ReportValue(
                    report=report,
                    r_id=r_id,
                    resource_id=resource_id,
                    measurement=measurement,
                    at=at,
                    value=value,
                )
            )


# -- pieces ----------------------------------------------------------------------------------


def _seconds(duration: dt.timedelta | float) -> dt.timedelta:
    return duration if isinstance(duration, dt.timedelta) else dt.timedelta(seconds=duration)


def _intervals(intervals: Sequence[Interval]) -> list[objects.Interval]:
    if not intervals:
        raise ValueError("an event needs at least one interval")
    out = []
    for start, duration, value in intervals:
        if start.tzinfo is None:
            raise ValueError("interval starts must be timezone-aware")
        out.append(
            objects.Interval(dtstart=start, duration=_seconds(duration), signal_payload=value)
        )
    return out


def _zero_as_pt0s(event: objects.Event) -> None:
    """A zero duration goes out as ``PT0S``: openleadr would write ``P``, which no schema
    accepts, and a VEN is to see a well-formed message that asks for nothing."""
    for signal in event.event_signals:
        for interval in signal.intervals:
            if interval.duration == dt.timedelta(0):
                interval.duration = "PT0S"


def _no_callback(ven_id: str, event_id: str, opt_type: str) -> None:
    """The answers are recorded from every oadrCreatedEvent (openleadr calls a callback only
    for the first)."""


def _active_period(intervals: Sequence[Interval]) -> objects.ActivePeriod:
    start = min(s for s, _, _ in intervals)
    end = max(s + _seconds(d) for s, d, _ in intervals)
    return objects.ActivePeriod(dtstart=start, duration=end - start)


def _tamper(body: bytes, kind: Tamper) -> bytes:
    if kind == "malformed":
        return body[: len(body) // 2]
    tree = etree.fromstring(body)
    if kind == "unsigned":
        for sig in tree.findall(f"{_DS}Signature"):
            tree.remove(sig)
    else:
        signed = next(e for e in tree if etree.QName(e).localname == "oadrSignedObject")
        values = [
            e
            for e in signed.iter()
            if isinstance(e.tag, str) and etree.QName(e).localname == "value"
        ]
        target = values[0] if values else next(
            e for e in signed.iter() if isinstance(e.tag, str) and etree.QName(e).localname == "requestID"
        )  # fmt: skip
        try:
            target.text = repr(float(target.text or "0") + 1.0)
        except ValueError:
            target.text = (target.text or "") + "x"
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="utf-8"))
