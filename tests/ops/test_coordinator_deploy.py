"""deploy/ for the fleet coordinator: its unit (hardened as feederd's, verified by
``systemd-analyze``), the example fleet.toml through ``feederd coordinate check``, promtool on
the federation config and the fleet's alert rules, the fleet dashboard's and alerts' PromQL
naming only metrics the coordinator exports (and parsing, through promtool), and a real
Prometheus scraping a running coordinator and evaluating every one of them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ops_helpers import (
    FEEDERD,
    free_port,
    mqtt_pub,
    mqtt_retained,
    poll_until,
    start_prometheus,
    wait_port,
)

from controller.flex import Flexibility
from coordinator.metrics import FleetMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "feederd-coordinator.service"

pytestmark = pytest.mark.integration


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make apt` (as root)")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)


def test_unit_is_notify_with_a_watchdog_and_hardened_like_feederds() -> None:
    out = _run(_tool("systemd-analyze"), "security", "--offline=true", str(UNIT))
    m = re.search(r"Overall exposure level for feederd-coordinator.service: ([\d.]+)", out.stdout)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) <= 2.0
    unit = UNIT.read_text()
    assert "Type=notify" in unit
    assert "WatchdogSec=" in unit
    assert "feederd coordinate --config" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    # every hardening line of feederd's unit, but its serial ports (the coordinator has none)
    feederd = (DEPLOY / "feederd.service").read_text()
    hardening = feederd.split("# hardening", 1)[1].split("[Install]", 1)[0]
    for line in hardening.splitlines():
        if "=" in line and not line.startswith(("#", "DeviceAllow=")):
            assert line in unit, line


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart= exists: point it at this checkout's feederd
    text = UNIT.read_text().replace("/opt/feederd/venv/bin/feederd", FEEDERD)
    (tmp_path / "feederd-coordinator.service").write_text(text)
    out = _run(
        _tool("systemd-analyze"),
        "verify",
        "--man=no",
        str(tmp_path / "feederd-coordinator.service"),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr.strip() == ""


def test_example_fleet_config_is_valid() -> None:
    out = _run(FEEDERD, "coordinate", "check", "--config", str(DEPLOY / "fleet.example.toml"))
    assert out.returncode == 0, out.stderr
    assert "fleet district-north: 3 feeders" in out.stdout
    assert out.stderr == ""


def test_promtool_accepts_the_federation_config_and_the_fleet_rules() -> None:
    promtool = _tool("promtool")
    for args in (
        ["check", "config", str(DEPLOY / "prometheus/federation.yml")],
        ["check", "rules", str(DEPLOY / "prometheus/fleet-alerts.yml")],
    ):
        out = _run(promtool, *args)
        assert out.returncode == 0, out.stdout + out.stderr
    text = (DEPLOY / "prometheus/federation.yml").read_text()
    assert "/federate" in text
    assert "honor_labels: true" in text
    assert "fleet-alerts.yml" in text


def _expressions() -> tuple[list[str], list[str]]:
    dash = json.loads((DEPLOY / "grafana/fleet.json").read_text())
    panel = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    text = (DEPLOY / "prometheus/fleet-alerts.yml").read_text()
    alerts = re.findall(r"^\s+expr: (.+)$", text, flags=re.MULTILINE)
    assert len(alerts) == text.count("- alert:")
    return panel, alerts


def _exposed_names() -> set[str]:
    """Every series name the coordinator's metrics can expose."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    names: set[str] = set()
    for family in FleetMetrics().registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def test_every_fleet_dashboard_and_alert_expression_names_metrics_the_coordinator_has() -> None:
    panel, alerts = _expressions()
    exposed = _exposed_names()
    for expr in (*panel, *alerts):
        names = re.findall(r"\bfeederd_[a-z_]+", expr)
        for name in names:
            assert name in exposed, f"{name!r} in {expr!r} is not a coordinator metric"
    dash = json.loads((DEPLOY / "grafana/fleet.json").read_text())
    queries = {p["title"]: {t["expr"] for t in p["targets"]} for p in dash["panels"]}
    # what the issue asks the dashboard to show
    assert {"feederd_fleet_import_kw", "feederd_fleet_target_kw"} <= queries[
        "Fleet import against the targets"
    ]
    assert "feederd_fleet_share_kw" in queries["Per-feeder share (allocated import limit)"]
    assert queries["Feeders missing or silent"] == {"feederd_fleet_feeder_up == 0"}
    assert queries["Shortfall by target"] == {"feederd_fleet_shortfall_kw"}
    assert any("allocation_seconds" in q for q in queries["Allocation time"])
    alert_names = re.findall(
        r"- alert: (\w+)", (DEPLOY / "prometheus/fleet-alerts.yml").read_text()
    )
    assert {"FeederdFleetFeederSilent", "FeederdFleetShortfall"} <= set(alert_names)


def test_every_dashboard_expression_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel's query (as a recording rule: no server needed)."""
    panel, _ = _expressions()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"fleet_panel_{i}", "expr": e} for i, e in enumerate(panel)],
            }
        ]
    }
    path = tmp_path / "panels.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    out = _run(_tool("promtool"), "check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body: bytes = resp.read()
    except OSError:
        return None
    return body


def _query(port: int, expr: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:
        result: dict[str, Any] = json.loads(resp.read())
    return result


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_prometheus_scrapes_the_coordinator_and_every_expression_evaluates(
    broker: int, tmp_path: Path
) -> None:
    prometheus, promtool = _tool("prometheus"), _tool("promtool")
    metrics_port, prom_port = free_port(), free_port()
    sites = {"p1": (2000.0, 1500.0), "p2": (3000.0, 2200.0)}
    feeders = "".join(f'[[feeders]]\nsite = "{s}"\nrating_kw = 5000.0\n' for s in sites)
    config = tmp_path / "fleet.toml"
    config.write_text(
        'name = "prom"\ntopic_root = "prom-fleet"\nfeeder_root = "prom-feeders"\n'
        'interval_s = 1.0\n[journal]\npath = "journal.sqlite"\n'
        f'[mqtt]\nport = {broker}\nclient_id = "prom-coordinator"\n'
        f"[metrics]\nport = {metrics_port}\n{feeders}"
    )
    now = datetime.now(UTC)
    for site, (top, low) in sites.items():  # each feeder's flexibility, as feederd sends it
        flex = Flexibility(
            site=site, at=now, seq=1, interval_s=5.0, window_s=3600.0, import_kw=top,
            limit_kw=None, min_kw=low, max_kw=top, curve=((low, 100.0), (top, 0.0)),
        )  # fmt: skip
        mqtt_pub(broker, f"prom-feeders/{site}/flex", json.dumps(flex.to_json()), "-r")
        mqtt_pub(broker, f"prom-feeders/{site}/online", "true", "-r")
    coordinator = subprocess.Popen(
        [FEEDERD, "coordinate", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    prom: subprocess.Popen[bytes] | None = None
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        wait_port(metrics_port, 60)
        # subscribed (a target is not retained: one sent before would be lost, as it should)
        poll_until(
            lambda: mqtt_retained(broker, "prom-fleet/online") == "true", "the coordinator online"
        )
        target = {
            "id": "evening", "group": "all", "type": "reduce_by", "kw": 500.0,
            "start": now.isoformat(), "end": (now + timedelta(hours=1)).isoformat(),
        }  # fmt: skip
        mqtt_pub(broker, "prom-fleet/target", json.dumps(target))
        poll_until(
            lambda: b"feederd_fleet_share_kw{" in (_get(metrics_url) or b""),
            f"an allocation on {metrics_url}",
            60,
        )
        text = _get(metrics_url)
        assert text is not None
        lint = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30, check=False
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
        prom = start_prometheus(
            prometheus,
            tmp_path,
            job="feederd-fleet",
            target_port=metrics_port,
            rules=DEPLOY / "prometheus/fleet-alerts.yml",
            port=prom_port,
        )

        def scrapes() -> float:
            res = _query(prom_port, "count_over_time(feederd_fleet_import_kw[1m])")
            return float(res["data"]["result"][0]["value"][1]) if res["data"]["result"] else 0.0

        poll_until(lambda: scrapes() >= 3, "three scrapes of the coordinator", 60)
        panel, alerts = _expressions()
        # no data by design in a healthy, short run: nothing refused, no feeder silent
        quiet = ("flex_refused", "feeder_up == 0")
        for expr in panel:
            res = _query(prom_port, expr)
            assert res["status"] == "success", (expr, res)
            if not any(word in expr for word in quiet):
                assert res["data"]["result"], f"no data for dashboard expression {expr!r}"
        for expr in alerts:
            res = _query(prom_port, expr)
            assert res["status"] == "success", (expr, res)
        shares = _query(prom_port, "feederd_fleet_share_kw")["data"]["result"]
        # the reduction allocated is the reduction asked: what the feeders asked draw left
        # alone minus their limits
        asked = {r["metric"]["site"]: float(r["value"][1]) for r in shares}
        assert asked
        assert sum(sites[s][0] - kw for s, kw in asked.items()) == pytest.approx(500.0, abs=1.0)
        up = _query(prom_port, 'up{job="feederd-fleet"}')["data"]["result"]
        assert up[0]["value"][1] == "1"
        assert coordinator.poll() is None  # live throughout
    finally:
        _stop(prom)
        _stop(coordinator)
