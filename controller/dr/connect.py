"""From the config to a ready ``MqttSettings``: secrets read from files, TLS loaded once.

A secret path may be ``credential:NAME``: the file ``NAME`` in ``$CREDENTIALS_DIRECTORY``,
where systemd puts what the unit's ``LoadCredential=`` names (readable by the service only).
Other paths start next to the config file when relative. Secrets never come from the command
line or the environment. Loading certificates blocks, so it is done here, once, before the
event loop serves anything (DESIGN.md §6).

Every file is a regular file of at most 64 KiB (``SECRET_MAX_BYTES``), checked before it is
opened. ``check_secrets`` is what ``load_config`` runs (so ``feederd check``, ``run`` and a
SIGHUP reload check the same): the same reads as ``mqtt_settings`` and ``metrics_tls_files``,
except that a ``credential:NAME`` outside systemd (no ``$CREDENTIALS_DIRECTORY``) becomes a note
that it could not be checked here, where ``run`` refuses it.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from controller.config import (
    SECRET_MAX_BYTES,
    Config,
    ConfigError,
    FileRefused,
    check_regular_file,
    read_limited,
    resolve_path,
)

if TYPE_CHECKING:  # the MQTT stack is loaded by `run`, not by `check`
    from controller.config.models import MqttConfig
    from controller.dr.mqtt_common import MqttSettings

__all__ = [
    "check_secrets",
    "metrics_tls_files",
    "mqtt_secrets",
    "mqtt_settings",
    "mqtt_table_secrets",
    "read_secret",
    "secret_bytes",
    "secret_path",
]

CREDENTIAL = "credential:"


def secret_path(
    value: str,
    *,
    source: str,
    key: str,
    base_dir: Path | None = None,
    notes: list[str] | None = None,
) -> Path | None:
    """Where ``value`` is. A ``credential:NAME`` without ``$CREDENTIALS_DIRECTORY`` is a
    ``ConfigError``, or, given ``notes`` (``check``), a note and ``None``."""
    if value.startswith(CREDENTIAL):
        name = value.removeprefix(CREDENTIAL)
        if not name or "/" in name or name in (".", ".."):
            raise ConfigError(source, key, f"{value!r}: a credential is a plain file name")
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            if notes is None:
                raise ConfigError(
                    source, key, f"{value!r} needs $CREDENTIALS_DIRECTORY (run under systemd)"
                )
            notes.append(
                f"{key}: {value!r} is a systemd credential: it cannot be checked here (no "
                "$CREDENTIALS_DIRECTORY); `feederd run` checks it when it starts under systemd"
            )
            return None
        return Path(directory) / name
    return Path(value) if base_dir is None else resolve_path(value, base_dir)


def _checked(path: Path, *, source: str, key: str) -> Path:
    """``path`` unless it is there but is not a regular file of at most ``SECRET_MAX_BYTES``
    (one that is missing or unreadable is left to the loader, which says so)."""
    try:
        os.stat(path)
    except OSError:
        return path
    try:
        check_regular_file(path, limit=SECRET_MAX_BYTES)
    except FileRefused as err:
        raise ConfigError(source, key, str(err)) from None
    return path


def secret_bytes(
    value: str, *, source: str, key: str, base_dir: Path | None, notes: list[str] | None
) -> tuple[Path, bytes] | None:
    """Where the secret ``value`` is and its bytes (``None``: a credential not readable here,
    noted); every problem is a ``ConfigError`` naming ``key``."""
    path = secret_path(value, source=source, key=key, base_dir=base_dir, notes=notes)
    if path is None:
        return None
    try:
        return path, read_limited(path, limit=SECRET_MAX_BYTES)
    except FileRefused as err:
        raise ConfigError(source, key, str(err)) from None


def read_secret(
    value: str, *, source: str, key: str, base_dir: Path | None, notes: list[str] | None
) -> str | None:
    """The secret ``value`` as text (UTF-8, stripped), as ``secret_bytes`` reads it."""
    got = secret_bytes(value, source=source, key=key, base_dir=base_dir, notes=notes)
    if got is None:
        return None
    path, data = got
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        raise ConfigError(
            source, key, f"{str(path)!r}: not valid UTF-8 (byte {err.start})"
        ) from None


def _tls_file(
    value: str, *, source: str, key: str, base_dir: Path | None, notes: list[str] | None
) -> Path | None:
    path = secret_path(value, source=source, key=key, base_dir=base_dir, notes=notes)
    return None if path is None else _checked(path, source=source, key=key)


def mqtt_secrets(
    config: Config,
    *,
    source: str,
    base_dir: Path | None = None,
    notes: list[str] | None = None,
) -> tuple[str | None, ssl.SSLContext | None]:
    """The broker password and TLS context of ``config.mqtt``; every problem is a
    ``ConfigError`` (with ``notes``: a credential that cannot be checked here is noted)."""
    return mqtt_table_secrets(config.mqtt, source=source, base_dir=base_dir, notes=notes)


def mqtt_table_secrets(
    m: MqttConfig,
    *,
    source: str,
    base_dir: Path | None = None,
    notes: list[str] | None = None,
) -> tuple[str | None, ssl.SSLContext | None]:
    """``mqtt_secrets`` of one ``[mqtt]`` table (feederd's or the fleet coordinator's)."""
    password = (
        None
        if m.password_file is None
        else read_secret(
            m.password_file,
            source=source,
            key="mqtt.password_file",
            base_dir=base_dir,
            notes=notes,
        )
    )
    if m.tls is None:
        return password, None
    ca = (
        None
        if m.tls.ca_file is None
        else _tls_file(
            m.tls.ca_file, source=source, key="mqtt.tls.ca_file", base_dir=base_dir, notes=notes
        )
    )
    if m.tls.ca_file is not None and ca is None:  # not checkable here
        context = ssl.create_default_context()
    else:
        try:
            context = ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError, ValueError) as err:
            raise ConfigError(source, "mqtt.tls.ca_file", f"cannot load CA: {err}") from None
    if m.tls.cert_file is not None and m.tls.key_file is not None:
        cert = _tls_file(
            m.tls.cert_file,
            source=source,
            key="mqtt.tls.cert_file",
            base_dir=base_dir,
            notes=notes,
        )
        key = _tls_file(
            m.tls.key_file, source=source, key="mqtt.tls.key_file", base_dir=base_dir, notes=notes
        )
        if cert is not None and key is not None:
            try:
                context.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError, ValueError) as err:
                raise ConfigError(
                    source, "mqtt.tls.cert_file", f"cannot load client certificate: {err}"
                ) from None
    return password, context


def mqtt_settings(config: Config, *, source: str, base_dir: Path | None = None) -> MqttSettings:
    """The intake settings of ``config.mqtt``; every problem is a ``ConfigError``."""
    from controller.dr.mqtt_common import MqttSettings  # noqa: PLC0415

    m = config.mqtt
    password, context = mqtt_secrets(config, source=source, base_dir=base_dir)
    return MqttSettings(
        host=m.host,
        port=m.port,
        topic_root=config.topic_root,
        username=m.username,
        password=password,
        tls=context,
        client_id=m.client_id or f"feederd-{config.site}",
        keepalive_s=m.keepalive_s,
        queue_size=m.queue_size,
    )


def metrics_tls_files(
    config: Config,
    *,
    source: str,
    base_dir: Path | None = None,
    notes: list[str] | None = None,
) -> tuple[str, str] | None:
    """The metrics endpoint's certificate and key as paths (``credential:NAME`` resolved),
    checked to load; None when it serves plain HTTP (or, with ``notes``, when they cannot be
    checked here). Every problem is a ``ConfigError``."""
    m = config.metrics
    if m.tls_cert_file is None or m.tls_key_file is None:
        return None
    cert = _tls_file(
        m.tls_cert_file,
        source=source,
        key="metrics.tls_cert_file",
        base_dir=base_dir,
        notes=notes,
    )
    key = _tls_file(
        m.tls_key_file, source=source, key="metrics.tls_key_file", base_dir=base_dir, notes=notes
    )
    if cert is None or key is None:
        return None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError, ValueError) as err:
        raise ConfigError(
            source, "metrics.tls_cert_file", f"cannot load certificate and key: {err}"
        ) from None
    return str(cert), str(key)


def check_secrets(
    config: Config, *, source: str, base_dir: Path, require_credentials: bool = False
) -> tuple[str, ...]:
    """What ``run`` will read (the metrics certificate when metrics are on, the broker's
    password and TLS files when MQTT is on), read and loaded the same way. Returns the notes
    on credentials that only exist under systemd, or, with ``require_credentials`` (``run``),
    refuses them."""
    notes: list[str] | None = None if require_credentials else []
    if config.metrics.enabled:
        metrics_tls_files(config, source=source, base_dir=base_dir, notes=notes)
    if config.mqtt.enabled:
        mqtt_secrets(config, source=source, base_dir=base_dir, notes=notes)
    if config.openadr.enabled:
        from controller.openadr.settings import check_openadr  # noqa: PLC0415

        check_openadr(config, source=source, base_dir=base_dir, notes=notes)
    return tuple(notes or ())
