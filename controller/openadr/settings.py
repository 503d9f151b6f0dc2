"""From ``[openadr]`` to ready ``VenSettings``: secrets read from files, TLS loaded once.

The certificate, key, passphrase, CA and fingerprint files may be ``credential:NAME`` (systemd
``LoadCredential=``); relative paths start next to the config. Everything is read and loaded here,
once, before the event loop serves anything (loading certificates blocks). ``check_openadr`` is
what ``load_config`` runs, so ``feederd check``, ``run`` and a reload refuse the same things.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from controller.config import Config, ConfigError
from controller.config.openadr import OpenAdrConfig, SimpleLevels, _fingerprint
from controller.dr.connect import read_secret, secret_bytes

__all__ = ["VenSettings", "check_openadr", "openadr_settings", "ven_settings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class VenSettings:
    vtn_url: str
    ven_name: str
    ven_id: str | None
    cert_pem: bytes | None
    key_pem: bytes | None
    passphrase: str | None
    tls: ssl.SSLContext
    vtn_fingerprint: str
    poll_s: float
    poll_min_s: float
    request_timeout_s: float
    priority: int
    market_contexts: tuple[str, ...]
    simple: SimpleLevels
    sign: bool


def ven_settings(
    config: Config, *, source: str, base_dir: Path | None = None, notes: list[str] | None = None
) -> VenSettings | None:
    """The VEN's settings (``None`` when ``[openadr]`` is off, or, with ``notes``, when a
    credential cannot be read here); every problem is a ``ConfigError`` naming the key."""
    return openadr_settings(config.openadr, source=source, base_dir=base_dir, notes=notes)


def openadr_settings(
    o: OpenAdrConfig,
    *,
    source: str,
    base_dir: Path | None = None,
    notes: list[str] | None = None,
) -> VenSettings | None:
    """``ven_settings`` from the ``[openadr]`` table alone (the fleet coordinator's too)."""
    if not o.enabled or o.vtn_url is None or o.ven_name is None:
        return None
    p = "openadr."

    def read(value: str | None, key: str) -> tuple[Path, bytes] | None:
        if value is None:
            return None
        return secret_bytes(value, source=source, key=p + key, base_dir=base_dir, notes=notes)

    def text(value: str | None, key: str) -> str | None:
        if value is None:
            return None
        return read_secret(value, source=source, key=p + key, base_dir=base_dir, notes=notes)

    cert = read(o.cert_file, "cert_file")
    key = read(o.key_file, "key_file")
    ca = read(o.ca_file, "ca_file")
    passphrase = text(o.key_passphrase_file, "key_passphrase_file")
    raw = text(o.vtn_fingerprint_file, "vtn_fingerprint_file")
    unreadable = any(
        v is not None and r is None
        for v, r in (
            (o.cert_file, cert),
            (o.key_file, key),
            (o.key_passphrase_file, passphrase),
            (o.ca_file, ca),
            (o.vtn_fingerprint_file, raw),
        )
    )
    if unreadable:  # a systemd credential, noted by secret_path
        return None
    if raw is not None:
        try:
            fingerprint = _fingerprint(raw)
        except ValueError as err:
            raise ConfigError(source, p + "vtn_fingerprint_file", str(err)) from None
    else:
        assert o.vtn_fingerprint is not None  # the model requires one of the two
        fingerprint = o.vtn_fingerprint
    fingerprint = ":".join(fingerprint.split(":")[-10:])  # OpenADR's: the digest's last 10 bytes
    try:
        context = ssl.create_default_context(cafile=None if ca is None else str(ca[0]))
    except (OSError, ssl.SSLError, ValueError) as err:
        raise ConfigError(source, p + "ca_file", f"cannot load CA: {err}") from None
    context.check_hostname = o.check_hostname
    if cert is not None and key is not None:
        try:
            context.load_cert_chain(str(cert[0]), str(key[0]), password=passphrase)
        except (OSError, ssl.SSLError, ValueError) as err:
            raise ConfigError(
                source, p + "cert_file", f"cannot load the VEN's certificate and key: {err}"
            ) from None
    return VenSettings(
        vtn_url=o.vtn_url,
        ven_name=o.ven_name,
        ven_id=o.ven_id,
        cert_pem=None if cert is None else cert[1],
        key_pem=None if key is None else key[1],
        passphrase=passphrase,
        tls=context,
        vtn_fingerprint=fingerprint,
        poll_s=o.poll_s,
        poll_min_s=o.poll_min_s,
        request_timeout_s=o.request_timeout_s,
        priority=o.priority,
        market_contexts=tuple(o.market_contexts),
        simple=o.simple,
        sign=o.sign,
    )


def check_openadr(config: Config, *, source: str, base_dir: Path, notes: list[str] | None) -> None:
    """What ``run`` will read for the VEN, read and loaded the same way."""
    if config.openadr.enabled:
        ven_settings(config, source=source, base_dir=base_dir, notes=notes)
