"""deploy/: the unit's exposure score, promtool on rules, config and live metrics, and the
real Prometheus scraping the demo and evaluating every dashboard and alert expression."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from ops_helpers import FEEDERD, free_port, poll_until, start_prometheus, wait_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

pytestmark = pytest.mark.integration


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make apt` (as root)")
    return path


def test_unit_exposure_is_at_most_2() -> None:
    out = subprocess.run(
        [_tool("systemd-analyze"), "security", "--offline=true", str(DEPLOY / "feederd.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    m = re.search(r"Overall exposure level for feederd.service: ([\d.]+)", out.stdout)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) <= 2.0
    unit = (DEPLOY / "feederd.service").read_text()
    assert "Type=notify" in unit
    assert "WatchdogSec=" in unit
    assert "AF_INET" in unit  # the field network stays reachable
    assert "DeviceAllow=char-ttyS rw" in unit  # and so does a serial port


def test_promtool_accepts_rules_and_scrape_config() -> None:
    promtool = _tool("promtool")
    for args in (
        ["check", "rules", str(DEPLOY / "prometheus/alerts.yml")],
        ["check", "config", str(DEPLOY / "prometheus/prometheus.yml")],
    ):
        out = subprocess.run(
            [promtool, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert out.returncode == 0, out.stdout + out.stderr


def test_example_config_is_valid() -> None:
    out = subprocess.run(
        [FEEDERD, "check", "--config", str(DEPLOY / "feederd.example.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def _expressions() -> tuple[list[str], list[str]]:
    dash = json.loads((DEPLOY / "grafana/feederd.json").read_text())
    panel = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    text = (DEPLOY / "prometheus/alerts.yml").read_text()
    alerts = re.findall(r"^\s+expr: (.+)$", text, flags=re.MULTILINE)
    assert len(alerts) == text.count("- alert:")
    return panel, alerts


def _exposed_names() -> set[str]:
    """Every series name the daemon's metrics can expose (counters with ``_total``, histograms
    with their ``_bucket``, ``_sum`` and ``_count``)."""
    from controller.metrics import Metrics  # noqa: PLC0415

    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def test_every_dashboard_and_alert_expression_names_metrics_the_daemon_has() -> None:
    panel, alerts = _expressions()
    exposed = _exposed_names()
    for expr in (*panel, *alerts):
        for name in re.findall(r"\bfeederd_[a-z_]+", expr):
            assert name in exposed, f"{name!r} in {expr!r} is not a feederd metric"
    # the plan's panels (issue 15): the next hour of the plan, and the forecasts' error
    dash = json.loads((DEPLOY / "grafana/feederd.json").read_text())
    queries = {p["title"]: {t["expr"] for t in p["targets"]} for p in dash["panels"]}
    plan = next(q for title, q in queries.items() if title.startswith("Plan: the next hour"))
    assert plan >= {
        "feederd_plan_import_kw",
        "feederd_dr_import_limit_kw",
        "feederd_plan_soc_pct",
        "feederd_plan_curtailed_kw",
    }
    errors = next(q for title, q in queries.items() if title.startswith("Forecast error"))
    assert errors == {"feederd_forecast_mape_pct", "feederd_forecast_rmse_kw"}


def _query(port: int, expr: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:
        result: dict[str, Any] = json.loads(resp.read())
    return result


def _get(url: str) -> bytes | None:
    """The body at ``url``, or None while nothing (ready) answers there."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body: bytes = resp.read()
    except OSError:
        return None
    return body


def _sample(text: bytes, name: str, labels: str = "") -> float | None:
    """The value of one sample in the text exposition format, None when it is not there."""
    pattern = rf"^{re.escape(name)}{re.escape(labels)} (\S+)$".encode()
    m = re.search(pattern, text, flags=re.MULTILINE)
    return float(m.group(1)) if m else None


def test_prometheus_scrapes_the_demo_and_every_expression_evaluates(tmp_path: Path) -> None:
    prometheus, promtool = _tool("prometheus"), _tool("promtool")
    metrics_port, prom_port = free_port(), free_port()
    # real time (Prometheus scrapes on its clock); it is stopped as soon as the test has its
    # answers, long before the end of this duration
    demo = subprocess.Popen(
        [
            FEEDERD,
            "demo",
            "--duration",
            "600",
            "--interval",
            "1",
            "--metrics-port",
            str(metrics_port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    prom: subprocess.Popen[bytes] | None = None
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        wait_port(metrics_port, 60)

        def dispatched() -> bool:  # an interval dispatched and its compliance judged
            text = _get(metrics_url) or b""
            optimal = _sample(text, "feederd_cycles_total", '{status="optimal"}')
            return bool(optimal) and _sample(text, "feederd_dr_compliant") is not None

        poll_until(dispatched, f"a dispatched interval on {metrics_url}", 60)
        text = _get(metrics_url)
        assert text is not None
        lint = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30, check=False
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
        prom = start_prometheus(
            prometheus,
            tmp_path,
            job="feederd",
            target_port=metrics_port,
            rules=DEPLOY / "prometheus/alerts.yml",
            port=prom_port,
        )

        def scrapes() -> float:
            res = _query(prom_port, "count_over_time(feederd_feeder_import_kw[1m])")
            return float(res["data"]["result"][0]["value"][1]) if res["data"]["result"] else 0.0

        poll_until(lambda: scrapes() >= 3, "three scrapes of the demo in Prometheus", 60)
        panel, alerts = _expressions()
        for expr in panel:
            concrete = expr.replace("$__rate_interval", "30s").replace("$__range", "1m")
            res = _query(prom_port, concrete)
            assert res["status"] == "success", (expr, res)
            quiet = (
                "overruns",
                "fallbacks",
                "events_total",
                "bad_data",
                "estimation_meters",
                "forecast_",  # scored once forecasts have come true: not in a short demo
                "delivered_kwh",  # M&V: assessed once a DR event is over; none in the demo
                "requested_kwh",
                "performance_ratio",
                "openadr_refused",  # the VEN: counted once something happens; off in the demo
                "openadr_events",
                "openadr_opts",
            )
            if not any(word in expr for word in quiet):
                assert res["data"]["result"], f"no data for dashboard expression {expr!r}"
        for expr in alerts:
            res = _query(prom_port, expr)
            assert res["status"] == "success", (expr, res)
        up = _query(prom_port, 'up{job="feederd"}')["data"]["result"]
        assert up[0]["value"][1] == "1"
        assert demo.poll() is None  # the demo was live throughout
    finally:
        for p in (prom, demo):
            if p is not None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
