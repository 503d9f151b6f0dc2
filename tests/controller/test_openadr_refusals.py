"""What the VEN refuses, against openleadr's own VTN on loopback, with the real daemon and rig.

Messages it cannot trust: a signature that does not match the body, an unsigned message, one
that is not XML at all, a VTN
signing with a certificate other than the one whose fingerprint the VEN was given, a VTN whose
HTTPS certificate comes from a CA the VEN does not trust. Each is refused with one log line
(``openadr_message_refused`` or, for TLS, the same with its reason) and
``feederd_openadr_refused_total{reason}``; nothing it carried is stored, and the daemon goes on.

Events it cannot take: an unknown signal, an event already over, an interval of zero duration,
an event overlapping one it holds. Each is answered to the VTN with optOut, a status code and the
reason, logged (``openadr_event_rejected``), counted, and nothing of it is persisted.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from structlog.testing import capture_logs

from controller.commands.rig.simulation import Simulation
from tests.controller.openadr_helpers import (
    INTERVAL_S,
    in_force,
    logged,
    metric,
    persisted,
    vtn_feeder,
)
from tests.support.vtn import Pki, Tamper, Vtn
from tests.support.wait import until


def _refused(sim: Simulation, reason: str) -> float:
    return metric(sim, "feederd_openadr_refused_total", reason=reason)


async def _goes_on(sim: Simulation) -> None:
    """The control loop still dispatches its intervals."""
    for _ in range(2):
        record = await sim.step()
        assert record.status.dispatched, record


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("signature", "signature"), ("unsigned", "unsigned"), ("malformed", "schema")],
)
async def test_a_tampered_unsigned_or_malformed_message_is_refused_and_the_ven_goes_on(
    pki: Pki, kind: Tamper, reason: str
) -> None:
    with capture_logs() as logs:
        async with Vtn(pki) as vtn, vtn_feeder(vtn) as sim:
            await until(lambda: metric(sim, "feederd_openadr_registered") == 1, "registration")
            vtn.tamper(kind)
            start = sim.clock.now() + dt.timedelta(seconds=2 * INTERVAL_S)
            vtn.add_event([(start, 20 * INTERVAL_S, 1)], event_id="forged")
            await until(lambda: bool(vtn.tampered), "the altered message to leave the VTN")
            await until(lambda: _refused(sim, reason) >= 1, f"the VEN to refuse it ({reason})")
            # nothing it carried was taken, and the VEN did not answer it
            assert persisted(sim) == []
            assert vtn.responses_to("forged") == []
            await _goes_on(sim)
            # the same event, intact, is taken: the VEN goes on talking to the VTN
            vtn.redistribute()
            await until(lambda: bool(vtn.responses_to("forged")), "the answer to the intact event")
            assert in_force(sim) == ["oadr:forged:0:0"]
            assert vtn.responses_to("forged")[-1].opt_type == "optIn"
            assert _refused(sim, reason) == 1
    lines = logged(logs, "openadr_message_refused", reason=reason)
    assert len(lines) == 1, [e for e in logs if "openadr" in str(e.get("event"))]
    # it says where: the service whose answer was refused
    assert lines[0]["detail"].split(":")[0] in ("OadrPoll", "EiEvent"), lines[0]


@pytest.mark.parametrize(
    ("variant", "reason"),
    [({"signer": "impostor"}, "fingerprint"), ({"https": "untrusted"}, "tls")],
    ids=["wrong-signing-certificate", "untrusted-https"],
)
async def test_a_vtn_the_ven_cannot_trust_is_refused_and_the_daemon_goes_on(
    pki: Pki, variant: dict[str, Any], reason: str
) -> None:
    with capture_logs() as logs:
        async with Vtn(pki, **variant) as vtn, vtn_feeder(vtn) as sim:
            now = sim.clock.now()
            vtn.add_event([(now + dt.timedelta(seconds=INTERVAL_S), 600, 2)], event_id="bait")
            await until(lambda: _refused(sim, reason) >= 1, f"the VEN to refuse the VTN ({reason})")
            await _goes_on(sim)
            assert metric(sim, "feederd_openadr_registered") == 0
            assert metric(sim, "feederd_openadr_vtn_up") == 0
            assert persisted(sim) == []
            assert vtn.responses == []
            if reason == "tls":
                assert vtn.received == []  # the handshake failed: no message reached the VTN
    lines = logged(logs, "openadr_message_refused", reason=reason)
    assert len(lines) == 1, [e for e in logs if "openadr" in str(e.get("event"))]


async def test_events_it_cannot_take_are_answered_with_the_reason_and_nothing_is_stored(
    pki: Pki,
) -> None:
    with capture_logs() as logs:
        async with Vtn(pki) as vtn, vtn_feeder(vtn) as sim:
            await until(lambda: metric(sim, "feederd_openadr_registered") == 1, "registration")
            for _ in range(12):  # a minute on the daemon's clock
                await sim.step()
            now = sim.clock.now()
            # one good event, held
            vtn.add_event([(now + dt.timedelta(minutes=5), 600, 1)], event_id="good")
            await until(lambda: bool(vtn.responses_to("good")), "the answer to the good event")
            assert in_force(sim) == ["oadr:good:0:0"]

            bad = {
                "unknown-signal": vtn.add_event(
                    [(now + dt.timedelta(hours=1), 600, 0.25)],
                    signal="ELECTRICITY_PRICE",
                    signal_type="price",
                    event_id="unknown-signal",
                ),
                "custom-signal": vtn.add_event(
                    [(now + dt.timedelta(hours=2), 600, 1)],
                    signal="x-feederd-unknown",
                    signal_type="level",
                    event_id="custom-signal",
                ),
                # over by the daemon's clock (the VTN's wall clock still calls it far)
                "past": vtn.add_event([(now - dt.timedelta(seconds=50), 30, 1)], event_id="past"),
                "zero-length": vtn.add_event(
                    [
                        (now + dt.timedelta(hours=3), 600, 1),
                        (now + dt.timedelta(hours=3, minutes=10), 0, 2),
                    ],
                    event_id="zero-length",
                ),
                "overlapping": vtn.add_event(
                    [(now + dt.timedelta(minutes=10), 600, 2)], event_id="overlapping"
                ),
            }
            await until(
                lambda: all(vtn.responses_to(e) for e in bad), "the answers to the bad events"
            )
            await _goes_on(sim)
            answers = {e: vtn.responses_to(e)[-1] for e in bad}
            # the good event stays as it was: the bad ones changed nothing
            assert in_force(sim) == ["oadr:good:0:0"]
            assert persisted(sim) == ["oadr:good:0:0"]
            assert metric(sim, "feederd_openadr_events_total", result="accepted") == 1
            rejected = metric(sim, "feederd_openadr_events_total", result="rejected")
    for event_id, answer in answers.items():
        assert answer.opt_type == "optOut", (event_id, answer)
        assert answer.response_code != 200, (event_id, answer)
        reason = answer.response_description or ""
        assert reason not in ("", "OK", "ERROR"), (event_id, answer)
        lines = logged(logs, "openadr_event_rejected", vtn_event=event_id)
        assert lines, (event_id, answer)
        assert lines[0]["reason"] == reason, (event_id, lines, answer)
    assert "ELECTRICITY_PRICE" in (answers["unknown-signal"].response_description or "")
    assert "good" in (answers["overlapping"].response_description or "")  # names what it overlaps
    assert rejected == len(bad)
