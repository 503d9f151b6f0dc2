"""The ``[openadr]`` table: the OpenADR 2.0b VEN (``controller.openadr``).

The VEN talks to one VTN (the utility's or aggregator's server) over HTTPS with a client
certificate, signs what it sends and checks the VTN's signatures against a fingerprint. Secrets
are files (or ``credential:NAME``, a systemd credential), never inline and never on the command
line. ``[openadr.simple]`` says what each SIMPLE level asks of the feeder.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from controller.config.fields import MAX_KW, FilePath
from controller.config.fields import Strict as _Strict

__all__ = ["LevelConfig", "OpenAdrConfig", "SimpleLevels"]

_FINGERPRINT = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){9,63}$")
"""A certificate fingerprint as hex pairs joined by colons: openleadr's short form (the last
10 bytes of the SHA-256) or a whole digest."""


def _url(value: str) -> str:
    if not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", value):
        raise ValueError(
            f"{value!r} is not an http(s) URL of the VTN's OpenADR endpoint, e.g. "
            "https://vtn.example:8443/OpenADR2/Simple/2.0b"
        )
    if "@" in value.split("/")[2]:
        raise ValueError("credentials do not belong in a URL; use cert_file and key_file")
    return value.rstrip("/")


def _fingerprint(value: str) -> str:
    if not _FINGERPRINT.match(value):
        raise ValueError(
            f"{value[:80]!r} is not a certificate fingerprint (hex pairs joined by colons, "
            "e.g. 9B:6D:...:3C as the VTN's operator gives it)"
        )
    return value.upper()


Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]


class LevelConfig(_Strict):
    """What one SIMPLE level asks: an import limit at the head, or a reduction (kW)."""

    type: Literal["import_limit", "reduce_by"]
    kw: Annotated[float, Field(ge=0, le=MAX_KW)]

    @model_validator(mode="after")
    def _positive_reduction(self) -> LevelConfig:
        if self.type == "reduce_by" and self.kw <= 0:
            raise ValueError("a reduce_by level needs a positive 'kw'")
        return self


class SimpleLevels(_Strict):
    """SIMPLE levels 1 (moderate), 2 (high), 3 (special); level 0 is normal operation (no
    event). A level left unset is refused when a VTN sends it."""

    level_1: LevelConfig | None = None
    level_2: LevelConfig | None = None
    level_3: LevelConfig | None = None

    def level(self, n: int) -> LevelConfig | None:
        return {1: self.level_1, 2: self.level_2, 3: self.level_3}.get(n)


class OpenAdrConfig(_Strict):
    enabled: bool = False
    vtn_url: Annotated[str, Field(max_length=2048), AfterValidator(_url)] | None = None
    ven_name: Name | None = None
    # the VEN id: unset, the VTN assigns one at registration
    ven_id: Name | None = None
    # the VEN's certificate and key: TLS client authentication and the XML signatures
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    key_passphrase_file: FilePath | None = None
    # the CA that signed the VTN's HTTPS certificate (unset: the system's trust store)
    ca_file: FilePath | None = None
    check_hostname: bool = True
    # the fingerprint of the certificate the VTN signs its messages with: inline, or in a file
    vtn_fingerprint: Annotated[str, AfterValidator(_fingerprint)] | None = None
    vtn_fingerprint_file: FilePath | None = None
    # how often to poll until the VTN asks for its own frequency (then within these bounds)
    poll_s: Annotated[float, Field(ge=0.05, le=3600)] = 10.0
    poll_min_s: Annotated[float, Field(ge=0.05, le=3600)] = 1.0
    request_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    # priority of the VTN's events over local ones (MQTT, CLI) where they overlap
    priority: Annotated[int, Field(ge=-1000, le=1000)] = 100
    # market contexts accepted (empty: any)
    market_contexts: Annotated[
        list[Annotated[str, Field(max_length=512)]], Field(max_length=64)
    ] = Field(default_factory=list)
    simple: SimpleLevels = SimpleLevels()
    # the VEN's messages are signed (the VTN checks them) unless this is false
    sign: bool = True

    @model_validator(mode="after")
    def _complete(self) -> OpenAdrConfig:
        if not self.enabled:
            return self
        missing = [k for k in ("vtn_url", "ven_name") if getattr(self, k) is None]
        if missing:
            raise ValueError(f"an enabled [openadr] needs '{missing[0]}'")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both 'cert_file' and 'key_file' (the VEN's certificate)")
        if self.vtn_fingerprint is not None and self.vtn_fingerprint_file is not None:
            raise ValueError("give 'vtn_fingerprint' or 'vtn_fingerprint_file', not both")
        if self.vtn_fingerprint is None and self.vtn_fingerprint_file is None:
            raise ValueError(
                "an enabled [openadr] needs the VTN's 'vtn_fingerprint' (or "
                "'vtn_fingerprint_file'): the VEN refuses messages it cannot verify"
            )
        if self.sign and self.cert_file is None:
            raise ValueError("signing ('sign' = true) needs 'cert_file' and 'key_file'")
        if self.vtn_url is not None and self.vtn_url.startswith("http://"):
            raise ValueError(
                "'vtn_url' must be https:// (OpenADR 2.0b requires TLS with client certificates)"
            )
        if self.poll_min_s > self.poll_s:
            raise ValueError("'poll_min_s' must not exceed 'poll_s'")
        return self
