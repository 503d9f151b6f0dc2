"""The test VTN (``tests.support.vtn``) proved with openleadr's own VEN, ``OpenADRClient``, so the
harness that grades feederd's VEN is itself checked against an implementation that is not ours:
registration over mutual TLS, an event distributed and opted into, an oadrCreateOpt recorded, a
modification and a cancellation answered under their new numbers, reports at the granularity asked, and each fault
the harness injects refused by openleadr's client (a tampered signature, an unsigned message, an
impostor's signing certificate, an HTTPS certificate from an untrusted CA).

Everything runs on loopback in real time: openleadr's client polls on its own scheduler, so each
wait is for a condition under a hang guard, never a sleep.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from openleadr import OpenADRClient

from tests.support.vtn import Pki, Tamper, Vtn
from tests.support.wait import until


class _Ven:
    """openleadr's client and what it was handed."""

    def __init__(self, vtn: Vtn, pki: Pki, **kwargs: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.client = OpenADRClient(
            ven_name=vtn.ven_name,
            vtn_url=vtn.url,
            cert=str(pki.ven_cert),
            key=str(pki.ven_key),
            ca_file=str(pki.tls.ca),
            vtn_fingerprint=pki.vtn_fingerprint,
            show_fingerprint=False,
            **kwargs,
        )
        self.client.add_handler("on_event", self._on_event)
        self.client.add_handler("on_update_event", self._on_update)

    async def _on_event(self, event: dict[str, Any]) -> str:
        self.events.append(event)
        return "optIn"

    async def _on_update(self, event: dict[str, Any]) -> str:
        self.updates.append(event)
        return "optIn"


@asynccontextmanager
async def _running(ven: _Ven) -> AsyncIterator[_Ven]:
    await ven.client.run()
    try:
        yield ven
    finally:
        await ven.client.stop()


def _soon(minutes: float = 5.0) -> dt.datetime:
    """A start in the future on the real clock (openleadr's client answers only events that
    are not over by its own clock)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(minutes=minutes)


async def test_openleadr_client_registers_receives_an_event_and_opts_in(pki: Pki) -> None:
    async with Vtn(pki) as vtn, _running(_Ven(vtn, pki)) as ven:
        assert ven.client.registration_id == vtn.registration_id is not None
        assert ven.client.ven_id == vtn.ven_id
        (registration,) = vtn.registrations
        # the registration came over TLS with the VEN's own certificate
        assert registration.fingerprint == pki.ven_fingerprint

        event_id = vtn.add_event([(_soon(), 600, 2)])
        await until(lambda: bool(vtn.responses_to(event_id)), "the VEN's answer to the event")
        (response,) = vtn.responses_to(event_id)
        assert (response.opt_type, response.modification_number, response.response_code) == (
            "optIn",
            0,
            200,
        )
        (event,) = ven.events
        signal = event["event_signals"][0]
        assert (signal["signal_name"], signal["intervals"][0]["signal_payload"]) == ("SIMPLE", 2.0)

        # an opt on the event (oadrCreateOpt, with its reason) is acknowledged and recorded
        opt_id = await ven.client.create_opt(
            "optOut", "emergency", targets=[{"ven_id": vtn.ven_id}], event_id=event_id,
            modification_number=0,
        )  # fmt: skip
        assert opt_id
        (opt,) = vtn.opts
        assert (opt.opt_id, opt.opt_type, opt.opt_reason, opt.event_id) == (
            opt_id, "optOut", "emergency", event_id,
        )  # fmt: skip

        # a modification reaches it under the new number; so does the cancellation
        assert vtn.modify_event(event_id, values=[3]) == 1
        await until(lambda: bool(vtn.responses_to(event_id, 1)), "the answer to modification 1")
        assert ven.updates[-1]["event_signals"][0]["intervals"][0]["signal_payload"] == 3.0
        assert vtn.cancel_event(event_id) == 2
        await until(lambda: bool(vtn.responses_to(event_id, 2)), "the answer to the cancellation")
        assert ven.updates[-1]["event_descriptor"]["event_status"] == "cancelled"
        # every message the VEN sent was signed and checked: none refused
        assert {r.status for r in vtn.received} == {200}


async def test_load_dispatch_setpoint_and_a_zero_length_interval_are_well_formed(pki: Pki) -> None:
    """openleadr's client validates every message against the OpenADR schema: what the harness
    sends for its bad-input cases is bad in meaning only, never malformed."""
    async with Vtn(pki) as vtn, _running(_Ven(vtn, pki)) as ven:
        start = _soon()
        vtn.add_event([(start, 300, 1500.0)], signal="LOAD_DISPATCH", signal_type="setpoint")
        vtn.add_event(
            [(start + dt.timedelta(hours=1), 300, 1), (start + dt.timedelta(hours=2), 0, 2)]
        )
        await until(lambda: len(ven.events) == 2, "both events at the VEN")
        dispatch, zero = ven.events
        signal = dispatch["event_signals"][0]
        assert (signal["signal_type"], signal["intervals"][0]["signal_payload"]) == (
            "setpoint",
            1500.0,
        )
        assert signal["measurement"]["scale"] == "k"
        durations = [i["duration"] for i in zero["event_signals"][0]["intervals"]]
        assert durations == [dt.timedelta(seconds=300), dt.timedelta(0)]


async def test_reports_arrive_at_the_granularity_asked(pki: Pki) -> None:
    async with Vtn(pki, report_granularity_s=1) as vtn:
        ven = _Ven(vtn, pki)
        readings = iter(range(1000))
        ven.client.add_report(
            callback=lambda: float(next(readings)),
            resource_id="head",
            measurement="REAL_POWER",
            unit="W",
            scale="k",
            report_duration=dt.timedelta(hours=1),
            sampling_rate=dt.timedelta(seconds=1),
        )
        async with _running(ven):
            await until(lambda: len(vtn.reports) >= 3, "three report values")
        values = [r.value for r in vtn.reports]
        assert all(r.report == "TELEMETRY_USAGE" and r.resource_id == "head" for r in vtn.reports)
        assert values == sorted(values)
        assert values[0] >= 0.0
        stamps = [r.at for r in vtn.reports]
        steps = {round((b - a).total_seconds()) for a, b in itertools.pairwise(stamps)}
        assert steps <= {1}, steps


@pytest.mark.parametrize("kind", ["signature", "unsigned", "malformed"])
async def test_a_tampered_unsigned_or_malformed_event_is_refused_by_openleadrs_client(
    pki: Pki, kind: Tamper
) -> None:
    async with Vtn(pki) as vtn, _running(_Ven(vtn, pki)) as ven:
        vtn.tamper(kind)
        event_id = vtn.add_event([(_soon(), 600, 1)])
        await until(lambda: bool(vtn.tampered), "the altered distribution to leave")
        polls = vtn.count("oadrPoll")
        await until(
            lambda: vtn.count("oadrPoll") > polls, "the next poll (the altered one is done)"
        )
        assert ven.events == []
        assert vtn.responses_to(event_id) == []
        # the same event, sent intact, is taken: the harness broke only what it was told to
        vtn.redistribute()
        await until(lambda: bool(vtn.responses_to(event_id)), "the answer to the intact event")
        assert [e["event_descriptor"]["event_id"] for e in ven.events] == [event_id]


async def test_an_impostor_signer_and_an_untrusted_https_certificate_are_refused(
    pki: Pki, tmp_path: Path
) -> None:
    async with Vtn(pki, signer="impostor") as vtn:
        ven = _Ven(vtn, pki)
        await ven.client.run()  # gives up: no registration it could verify
        await ven.client.stop()
        assert ven.client.registration_id is None
        # the VTN did answer (over trusted TLS): what the client refused was the signature
        assert vtn.count("oadrQueryRegistration") == 1
    async with Vtn(pki, https="untrusted") as vtn:
        ven = _Ven(vtn, pki)
        await ven.client.run()
        await ven.client.stop()
        assert ven.client.registration_id is None
        assert vtn.received == []  # the handshake failed: no request reached the VTN


async def test_an_outage_then_a_vtn_that_forgot_the_registration(pki: Pki) -> None:
    async with Vtn(pki) as vtn, _running(_Ven(vtn, pki)) as ven:
        first = vtn.registration_id
        await vtn.stop()
        polls = vtn.count("oadrPoll")
        await vtn.restart(forget_registration=True)
        # openleadr's client is asked to register again on its next poll, and does
        await until(lambda: len(vtn.registrations) == 2, "the second registration")
        assert vtn.count("oadrPoll") > polls
        assert vtn.registration_id not in (None, first)
        assert ven.client.registration_id == vtn.registration_id
