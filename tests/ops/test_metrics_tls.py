"""The metrics endpoint over HTTPS (``metrics.tls_cert_file``/``tls_key_file``, the key as a
systemd credential), bound to 127.0.0.1 unless configured otherwise."""

from __future__ import annotations

import asyncio
import http.client
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from ops_helpers import FEEDERD, Daemon, daemon_toml, free_port

from controller.config import MetricsConfig
from hil import HilRig
from tests.support.tls import Certs, make_certs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("metrics-certs"))


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on ``port`` (from /proc/net/tcp{,6})."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":  # TCP_LISTEN
                found.add(address)
    return found


def _get(url: str, context: ssl.SSLContext | None = None) -> str:
    with urllib.request.urlopen(url, timeout=5, context=context) as resp:
        return str(resp.read().decode())


def _metrics_toml(port: int, cert: Path | str, key: str) -> str:
    return f'[metrics]\nport = {port}\ntls_cert_file = "{cert}"\ntls_key_file = "{key}"'


async def test_metrics_over_https_on_loopback(rig: HilRig, certs: Certs, tmp_path: Path) -> None:
    assert MetricsConfig().host == "127.0.0.1"  # the default binding
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    shutil.copy(certs.server_key, creds / "metrics-key")
    port = free_port()
    config = tmp_path / "feederd.toml"
    config.write_text(
        daemon_toml(
            rig,
            tmp_path / "journal.sqlite",
            extra=_metrics_toml(port, certs.server_cert, "credential:metrics-key"),
        )
    )
    async with Daemon(config, env={"CREDENTIALS_DIRECTORY": str(creds)}) as daemon:
        await daemon.wait_log("cycle", 60)
        # no host in the config: only 127.0.0.1 listens
        assert _listening_addresses(port) == {"0100007F"}
        trusting = ssl.create_default_context(cafile=str(certs.ca))
        # (urllib blocks: in a thread, so the rig on this event loop keeps answering)
        body = await asyncio.to_thread(_get, f"https://127.0.0.1:{port}/metrics", trusting)
        assert "feederd_cycles_total" in body
        # a client that does not trust the test CA refuses the server ...
        stranger = ssl.create_default_context(cafile=str(certs.rogue_ca))
        with pytest.raises(urllib.error.URLError) as refused:
            await asyncio.to_thread(_get, f"https://127.0.0.1:{port}/metrics", stranger)
        assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
        # ... and plain HTTP gets no metrics
        with pytest.raises((OSError, http.client.HTTPException)):
            await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")


def test_an_unreadable_metrics_key_is_a_config_error(
    rig: HilRig, certs: Certs, tmp_path: Path
) -> None:
    config = tmp_path / "feederd.toml"
    config.write_text(
        daemon_toml(
            rig,
            tmp_path / "journal.sqlite",
            extra=_metrics_toml(free_port(), certs.server_cert, str(tmp_path / "missing.key")),
        )
    )
    out = subprocess.run(
        [FEEDERD, "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert "metrics.tls_cert_file: cannot load certificate and key" in out.stderr
    assert "Traceback" not in out.stderr
