"""How the VEN checks a VTN's answer before it uses it (``controller.openadr.ven._verified``):
real messages signed by openleadr with the test PKI, then replayed, re-signed by another
certificate, stripped of their signature, or carrying a DOCTYPE; each is refused with the
reason the log and ``feederd_openadr_refused_total{reason}`` give."""

from __future__ import annotations

from pathlib import Path

import pytest
from openleadr.messaging import create_message

from controller.openadr.ven import VtnRefused, _Replay, _verified
from tests.support.vtn import Pki, fingerprint


def _signed(cert: Path, key: Path) -> bytes:
    """An oadrResponse as a VTN sends it, signed (with a fresh ReplayProtect)."""
    text = create_message(
        "oadrResponse",
        cert=cert.read_bytes(),
        key=key.read_bytes(),
        response={"response_code": 200, "response_description": "OK", "request_id": "r1"},
        ven_id="ven-1",
    )
    return str(text).encode()


def _reason(content: bytes, expected: str, replay: _Replay | None = None) -> str:
    with pytest.raises(VtnRefused) as err:
        _verified("OadrPoll", content, expected, replay or _Replay())
    return err.value.reason


def test_a_signed_answer_is_taken_once(pki: Pki) -> None:
    cert, key = pki.vtn_signing
    expected = fingerprint(cert)
    body = _signed(cert, key)
    replay = _Replay()
    kind, payload = _verified("OadrPoll", body, expected, replay)
    assert kind == "oadrResponse"
    assert payload["response"]["response_code"] == 200
    assert _reason(body, expected, replay) == "signature"  # the same nonce again: a replay


def test_another_signer_an_altered_body_and_no_signature_are_refused(pki: Pki) -> None:
    cert, key = pki.vtn_signing
    expected = fingerprint(cert)
    impostor = _signed(*pki.impostor_signing)
    assert _reason(impostor, expected) == "fingerprint"
    original = _signed(cert, key)
    altered = original.replace(b"<ei:responseCode>200", b"<ei:responseCode>201")
    assert altered != original
    assert _reason(altered, expected) == "signature"
    unsigned = str(
        create_message(
            "oadrResponse",
            response={"response_code": 200, "response_description": "OK", "request_id": "r"},
            ven_id="ven-1",
        )
    ).encode()
    assert _reason(unsigned, expected) == "unsigned"


def test_a_doctype_is_refused_before_anything_parses_it(pki: Pki, tmp_path: Path) -> None:
    """No entity of a hostile answer is expanded or resolved (billion laughs, a local file)."""
    secret = tmp_path / "secret"
    secret.write_text("do not read me")
    cert, key = pki.vtn_signing
    body = _signed(cert, key)
    decl = f'<!DOCTYPE p [<!ENTITY x SYSTEM "file://{secret}">]>'.encode()
    hostile = body.replace(b"?>", b"?>" + decl, 1) if body.startswith(b"<?xml") else decl + body
    with pytest.raises(VtnRefused) as err:
        _verified("OadrPoll", hostile, fingerprint(cert), _Replay())
    assert err.value.reason == "schema"
    assert "DOCTYPE" in err.value.detail
    assert _reason(b"<oadrPayload>not OpenADR", fingerprint(cert)) == "schema"
