"""Test certificates made with the openssl CLI: a CA, a server and a client it signed, and a
client (and CA) nobody trusts. Shared by the device tests (Modbus/TLS) and the ops tests (MQTT
over TLS, metrics over HTTPS)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Certs", "make_certs"]


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_cert: Path
    rogue_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _leaf(d: Path, name: str, ca: str, ca_key: str, *, server: bool) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)  # fmt: skip
    ext = d / f"{name}.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server else "extendedKeyUsage=clientAuth\n"
    )
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", ca, "-CAkey", ca_key,
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", ext.name, cwd=d)  # fmt: skip


def make_certs(d: Path) -> Certs:
    """Write the certificates into ``d`` (keys unencrypted, 0600)."""
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is not installed: apt-get install -y openssl")
    for ca in ("ca", "rogue-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key",
                 "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN={ca}", cwd=d)  # fmt: skip
    _leaf(d, "server", "ca.pem", "ca.key", server=True)
    _leaf(d, "client", "ca.pem", "ca.key", server=False)
    _leaf(d, "rogue", "rogue-ca.pem", "rogue-ca.key", server=False)
    for key in d.glob("*.key"):
        key.chmod(0o600)
    return Certs(
        ca=d / "ca.pem",
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        client_cert=d / "client.pem",
        client_key=d / "client.key",
        rogue_ca=d / "rogue-ca.pem",
        rogue_cert=d / "rogue.pem",
        rogue_key=d / "rogue.key",
    )
