"""From the config to a ready ``MqttSettings``: secrets read from files, TLS loaded once.

A secret path may be ``credential:NAME``: the file ``NAME`` in ``$CREDENTIALS_DIRECTORY``,
where systemd puts what the unit's ``LoadCredential=`` names (readable by the service only).
Secrets never come from the command line or the environment. Loading certificates blocks, so
it is done here, once, before the event loop serves anything (DESIGN.md §6).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from controller.config import Config, ConfigError
from controller.dr.intake import MqttSettings

__all__ = ["metrics_tls_files", "mqtt_settings", "secret_path"]


def secret_path(value: str, *, source: str, key: str) -> Path:
    if value.startswith("credential:"):
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ConfigError(
                source, key, f"{value!r} needs $CREDENTIALS_DIRECTORY (run under systemd)"
            )
        name = value.removeprefix("credential:")
        if not name or "/" in name or name in (".", ".."):
            raise ConfigError(source, key, f"{value!r}: a credential is a plain file name")
        return Path(directory) / name
    return Path(value)


def _read_secret(value: str, *, source: str, key: str) -> str:
    path = secret_path(value, source=source, key=key)
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise ConfigError(source, key, f"cannot read {path}: {err.strerror or err}") from None


def mqtt_settings(config: Config, *, source: str) -> MqttSettings:
    """The intake settings of ``config.mqtt``; every problem is a ``ConfigError``."""
    m = config.mqtt
    password = (
        None
        if m.password_file is None
        else _read_secret(m.password_file, source=source, key="mqtt.password_file")
    )
    context: ssl.SSLContext | None = None
    if m.tls is not None:
        ca = (
            None
            if m.tls.ca_file is None
            else secret_path(m.tls.ca_file, source=source, key="mqtt.tls.ca_file")
        )
        try:
            context = ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(source, "mqtt.tls.ca_file", f"cannot load CA: {err}") from None
        if m.tls.cert_file is not None and m.tls.key_file is not None:
            cert = secret_path(m.tls.cert_file, source=source, key="mqtt.tls.cert_file")
            key = secret_path(m.tls.key_file, source=source, key="mqtt.tls.key_file")
            try:
                context.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as err:
                raise ConfigError(
                    source, "mqtt.tls.cert_file", f"cannot load client certificate: {err}"
                ) from None
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


def metrics_tls_files(config: Config, *, source: str) -> tuple[str, str] | None:
    """The metrics endpoint's certificate and key as paths (``credential:NAME`` resolved),
    checked to load; None when it serves plain HTTP. Every problem is a ``ConfigError``."""
    m = config.metrics
    if m.tls_cert_file is None or m.tls_key_file is None:
        return None
    cert = secret_path(m.tls_cert_file, source=source, key="metrics.tls_cert_file")
    key = secret_path(m.tls_key_file, source=source, key="metrics.tls_key_file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(
            source, "metrics.tls_cert_file", f"cannot load certificate and key: {err}"
        ) from None
    return str(cert), str(key)
