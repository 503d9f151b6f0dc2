"""MQTT security against a real Mosquitto the test configures: TLS with a password file, TLS
with a required client certificate, the secrets read from files (``credential:NAME`` under
$CREDENTIALS_DIRECTORY), and what an operator sees when a password or a CA is wrong."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ops_helpers import (
    FEEDERD,
    GUARD_S,
    Daemon,
    daemon_toml,
    eventually,
    free_port,
    mqtt_pub,
    mqtt_retained,
)

from hil import HilRig
from tests.support.mosquitto import Mosquitto
from tests.support.tls import Certs, make_certs

pytestmark = pytest.mark.integration

DAEMON_PASSWORD = "dp-" + uuid.uuid4().hex  # unique, so a leak anywhere is found by search
OPERATOR_PASSWORD = "op-" + uuid.uuid4().hex


def _passwd(path: Path, user: str, password: str) -> None:
    exe = shutil.which("mosquitto_passwd")
    if exe is None:
        pytest.fail("mosquitto_passwd is not installed: apt-get install -y mosquitto")
    create = [] if path.exists() else ["-c"]
    subprocess.run([exe, *create, "-b", str(path), user, password], check=True, timeout=10)


@dataclass(frozen=True)
class SecureBroker:
    broker: Mosquitto
    certs: Certs
    passwd: Path

    @property
    def password_port(self) -> int:
        """TLS, username and password (no anonymous clients)."""
        return self.broker.ports[0]

    @property
    def cert_port(self) -> int:
        """TLS with a client certificate signed by the test CA (its CN is the username)."""
        return self.broker.ports[1]

    def operator(self) -> tuple[str, ...]:
        """mosquitto_pub/sub options of a second, legitimate client (over the password port)."""
        return ("--cafile", str(self.certs.ca), "-u", "operator", "-P", OPERATOR_PASSWORD)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("mqtt-certs"))


@pytest.fixture
async def secure_broker(tmp_path: Path, certs: Certs) -> AsyncIterator[SecureBroker]:
    passwd = tmp_path / "mosquitto.passwd"
    _passwd(passwd, "feederd", DAEMON_PASSWORD)
    _passwd(passwd, "operator", OPERATOR_PASSWORD)
    tls = f"cafile {certs.ca}\ncertfile {certs.server_cert}\nkeyfile {certs.server_key}\n"
    broker = Mosquitto(
        tmp_path,
        "per_listener_settings true\n"
        "listener {0} 127.0.0.1\n"
        f"{tls}allow_anonymous false\npassword_file {passwd}\n"
        "listener {1} 127.0.0.1\n"
        f"{tls}require_certificate true\nuse_identity_as_username true\n"
        "allow_anonymous false\n",
        ports=2,
    )
    await broker.start()
    try:
        yield SecureBroker(broker=broker, certs=certs, passwd=passwd)
    finally:
        broker.stop()


def _mqtt_toml(port: int, ca_file: Path | str, *, password_file: str | None, tls_extra: str = "",
               metrics_port: int | None = None) -> str:  # fmt: skip
    lines = [
        "[mqtt]",
        "enabled = true",
        'host = "127.0.0.1"',
        f"port = {port}",
        "keepalive_s = 5",
    ]
    if password_file is not None:
        lines += ['username = "feederd"', f'password_file = "{password_file}"']
    lines += ["[mqtt.tls]", f'ca_file = "{ca_file}"', tls_extra]
    if metrics_port is not None:
        lines += ["[metrics]", f"port = {metrics_port}"]
    return "\n".join(lines)


def _event(event_id: str) -> str:
    now = datetime.now(UTC)
    return json.dumps(
        {
            "id": event_id,
            "type": "import_limit",
            "kw": 1800,
            "start": (now - timedelta(minutes=1)).isoformat(),
            "end": (now + timedelta(hours=1)).isoformat(),
        }
    )


async def _status_with(
    port: int, topic: str, event_id: str, opts: tuple[str, ...]
) -> dict[str, Any]:
    """The retained dr/status once it shows ``event_id`` decided."""
    found: list[dict[str, Any]] = []

    async def decided() -> bool:
        text = await asyncio.to_thread(mqtt_retained, port, topic, *opts)
        doc = json.loads(text) if text else {"recent": []}
        found[:] = [doc]
        return any(d["id"] == event_id for d in doc["recent"])

    try:
        await eventually(decided, f"a retained status on {topic} that decides {event_id}")
    except AssertionError as err:
        raise AssertionError(f"{err}; last seen: {found}") from None
    return found[0]


def _no_secret_leaks(daemon: Daemon, secrets: list[str]) -> None:
    """Not in the logs, not on the command line, not in the environment of the process."""
    assert daemon.proc is not None
    pid = daemon.proc.pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    environ = Path(f"/proc/{pid}/environ").read_bytes().decode()
    log_text = "\n".join(daemon.stderr)
    for secret in secrets:
        assert secret not in cmdline
        assert secret not in environ
        assert secret not in log_text


async def _scrape(port: int) -> str:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    return await asyncio.to_thread(get)


def _sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + want + '}') if want else ''} (\S+)$"
    m = re.search(pattern, text, flags=re.MULTILINE)
    return float(m.group(1)) if m else 0.0


@pytest.mark.parametrize("variant", ["password", "client-cert"])
async def test_daemon_connects_over_tls_and_takes_a_dr_event(
    variant: str, rig: HilRig, secure_broker: SecureBroker, tmp_path: Path
) -> None:
    sb, certs = secure_broker, secure_broker.certs
    creds = tmp_path / "credentials"  # what systemd's LoadCredential= makes
    creds.mkdir(mode=0o700)
    (creds / "mqtt-password").write_text(DAEMON_PASSWORD + "\n")
    shutil.copy(certs.client_key, creds / "mqtt-key")
    if variant == "password":
        port = sb.password_port
        mqtt = _mqtt_toml(port, certs.ca, password_file="credential:mqtt-password")
    else:
        port = sb.cert_port
        mqtt = _mqtt_toml(
            port,
            certs.ca,
            password_file=None,
            tls_extra=f'cert_file = "{certs.client_cert}"\nkey_file = "credential:mqtt-key"',
        )
    site = "s" + uuid.uuid4().hex[:8]
    config = tmp_path / "feederd.toml"
    config.write_text(daemon_toml(rig, tmp_path / "journal.sqlite", site=site, extra=mqtt))
    async with Daemon(config, env={"CREDENTIALS_DIRECTORY": str(creds)}) as daemon:
        up = await daemon.wait_log("mqtt_connected", 60)
        assert up["port"] == port
        await daemon.wait_log("cycle")
        # an event published by another client reaches the daemon over its TLS connection
        pub = (
            sb.operator()
            if variant == "password"
            else ("--cafile", str(certs.ca), "--cert", str(certs.client_cert), "--key",
                  str(certs.client_key))
        )  # fmt: skip
        topic = f"feederd/{site}/dr"
        await asyncio.to_thread(mqtt_pub, port, f"{topic}/event", _event("tls-1"), *pub)
        accepted = await daemon.wait_log("dr_event_accepted")
        assert (accepted["id"], accepted["source"]) == ("tls-1", "mqtt")
        status = await _status_with(port, f"{topic}/status", "tls-1", pub)
        assert status["active"]["import_event"] == "tls-1"
        # the next cycles dispatch under the event's limit
        n = len(daemon.logs)
        for _ in range(10):
            cycle = await daemon.wait_log("cycle", after=n)
            if cycle["import_limit_kw"] == 1800:
                break
            n = daemon.logs.index(cycle) + 1
        assert cycle["import_limit_kw"] == 1800
        _no_secret_leaks(daemon, [DAEMON_PASSWORD, certs.client_key.read_text().splitlines()[1]])
        assert not daemon.events("mqtt_connect_failed")


async def test_wrong_password_and_untrusted_ca_are_reported_and_recovered(
    rig: HilRig, secure_broker: SecureBroker, tmp_path: Path
) -> None:
    sb, certs = secure_broker, secure_broker.certs
    wrong = "wrong-" + uuid.uuid4().hex
    password_file = tmp_path / "mqtt-password"
    password_file.write_text(wrong + "\n")
    password_file.chmod(0o600)
    ca_file = tmp_path / "broker-ca.pem"
    shutil.copy(certs.ca, ca_file)
    metrics_port = free_port()
    config = tmp_path / "feederd.toml"
    config.write_text(
        daemon_toml(
            rig,
            tmp_path / "journal.sqlite",
            extra=_mqtt_toml(
                sb.password_port,
                ca_file,
                password_file=str(password_file),
                metrics_port=metrics_port,
            ),
        )
    )
    async with Daemon(config) as daemon:
        # a wrong password: one clear line, a counter, and the daemon controls on regardless
        failed = await daemon.wait_log("mqtt_connect_failed", 60)
        assert failed["reason"] == "refused"
        assert "password_file" in failed["hint"]
        n = len(daemon.logs)
        await daemon.wait_log("cycle", after=n)
        metrics = await _scrape(metrics_port)
        assert _sample(metrics, "feederd_mqtt_connect_failures_total", reason="refused") >= 1
        assert _sample(metrics, "feederd_mqtt_connected") == 0

        # it retries (the counter goes on) but says so only once
        async def retried_twice() -> bool:
            text = await _scrape(metrics_port)
            return _sample(text, "feederd_mqtt_connect_failures_total", reason="refused") >= 3

        await eventually(retried_twice, "two more refused connection attempts", 2 * GUARD_S)
        assert len(daemon.events("mqtt_connect_failed")) == 1
        metrics = await _scrape(metrics_port)
        assert _sample(metrics, "feederd_mqtt_connect_failures_total", reason="refused") >= 2

        # fixed at the broker (the daemon's password set there, mosquitto reloaded): the
        # daemon's own retries get through, without a restart or a reload
        await asyncio.to_thread(_passwd, sb.passwd, "feederd", wrong)
        sb.broker.reload()
        await daemon.wait_log("mqtt_connected", 60)
        assert _sample(await _scrape(metrics_port), "feederd_mqtt_connected") == 1

        # a CA that did not sign the broker's certificate: the handshake fails ...
        shutil.copy(certs.rogue_ca, ca_file)
        n = len(daemon.logs)
        daemon.signal(signal.SIGHUP)
        await daemon.wait_log("reload", after=n)
        failed = await daemon.wait_log("mqtt_connect_failed", 60, after=n)
        assert failed["reason"] == "tls"
        assert "CERTIFICATE_VERIFY_FAILED" in failed["error"]
        assert "ca_file" in failed["hint"]
        metrics = await _scrape(metrics_port)
        assert _sample(metrics, "feederd_mqtt_connect_failures_total", reason="tls") >= 1
        await daemon.wait_log("cycle", after=len(daemon.logs))

        # ... and the right CA, on the next reload, connects again
        shutil.copy(certs.ca, ca_file)
        n = len(daemon.logs)
        daemon.signal(signal.SIGHUP)
        await daemon.wait_log("mqtt_connected", 60, after=n)
        _no_secret_leaks(daemon, [wrong])
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait_exit("the exit after SIGTERM") == 0
    assert not any("Traceback" in line for line in daemon.stderr)


def test_secrets_stay_off_the_command_line_and_need_their_directory(
    rig: HilRig, tmp_path: Path
) -> None:
    """A URL with credentials is refused without echoing them; ``credential:NAME`` outside
    systemd (no $CREDENTIALS_DIRECTORY) is a config error before anything starts."""
    out = subprocess.run(
        [FEEDERD, "demo", "--mqtt", f"mqtt://feederd:{DAEMON_PASSWORD}@127.0.0.1:1883"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert "credentials do not belong in a URL" in out.stderr
    assert DAEMON_PASSWORD not in out.stderr
    config = tmp_path / "feederd.toml"
    mqtt = _mqtt_toml(1883, "/nonexistent-ca.pem", password_file="credential:mqtt-password")
    config.write_text(daemon_toml(rig, tmp_path / "journal.sqlite", extra=mqtt))
    out = subprocess.run(
        [FEEDERD, "run", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "mqtt.password_file: 'credential:mqtt-password' needs $CREDENTIALS_DIRECTORY" in (
        out.stderr
    )
    # and under systemd, a credential name cannot reach outside its directory
    config.write_text(config.read_text().replace("credential:mqtt-password", "credential:../x"))
    out = subprocess.run(
        [FEEDERD, "run", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "CREDENTIALS_DIRECTORY": str(tmp_path)},
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "'credential:../x': a credential is a plain file name" in out.stderr


def test_the_mqtt_alert_fires_on_failures_and_clears_once_connected(tmp_path: Path) -> None:
    """``FeederdMqttConnectFailing`` in deploy/prometheus/alerts.yml, by ``promtool test rules``
    on the series the daemon exports: failures counting up while disconnected, then connected."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make apt` (as root)")
    rules = Path(__file__).resolve().parents[2] / "deploy/prometheus/alerts.yml"
    labels = 'instance="edge:9410", job="feederd"'
    (tmp_path / "test.yml").write_text(
        f"rule_files: [{rules}]\n"
        "evaluation_interval: 1m\n"
        "tests:\n"
        "  - interval: 1m\n"
        "    input_series:\n"
        f"      - series: 'feederd_mqtt_connect_failures_total{{reason=\"refused\", {labels}}}'\n"
        "        values: '0+2x20 40x20'\n"
        f"      - series: 'feederd_mqtt_connected{{{labels}}}'\n"
        "        values: '0x20 1x20'\n"
        "    alert_rule_test:\n"
        "      - eval_time: 3m\n"
        "        alertname: FeederdMqttConnectFailing\n"
        "        exp_alerts: []\n"
        "      - eval_time: 10m\n"
        "        alertname: FeederdMqttConnectFailing\n"
        "        exp_alerts:\n"
        "          - exp_labels: {severity: critical, reason: refused, instance: 'edge:9410',"
        " job: feederd}\n"
        "            exp_annotations:\n"
        "              summary: 'feederd cannot connect to its MQTT broker (refused): DR events"
        " do not arrive'\n"
        "      - eval_time: 30m\n"
        "        alertname: FeederdMqttConnectFailing\n"
        "        exp_alerts: []\n"
    )
    out = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "test.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
