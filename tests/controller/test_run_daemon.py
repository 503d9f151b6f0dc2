"""`feederd run` as systemd would run it: a subprocess, JSON logs, /metrics, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from hil import HilRig
from tests.support.net import free_port

FEEDERD = shutil.which("feederd", path=str(Path(sys.executable).parent)) or "feederd"


def _toml(rig: HilRig, metrics_port: int, journal: Path) -> str:
    lines = [
        'site = "itest"',
        "interval_s = 1.0",
        "[feeder]",
        'case = "builtin:case33bw"',
        "v_min_pu = 0.92",
        "[dr]",
        "import_limit_kw = 2000.0",
        "[poll]",
        "timeout_s = 0.4",
        "[metrics]",
        f"port = {metrics_port}",
        "[journal]",
        f'path = "{journal}"',
    ]
    for d in rig.devices:
        lines += [
            "[[devices]]",
            f'name = "{d.name}"',
            f'kind = "{d.kind}"',
            f"bus = {d.bus}",
            f'transport = {{ type = "tcp", host = "{d.host}", port = {d.port}, unit = {d.unit} }}',
        ]
        if d.kind == "meter":
            lines.append("head = true")
        else:
            lines += [f"rating_kw = {d.p_max_kw}", "revert_s = 10"]
        if d.kind == "battery":
            lines.append(f"energy_kwh = {d.energy_kwh}")
    return "\n".join(lines) + "\n"


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + (
                "{" + ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())) + "}"
                if sample.labels
                else ""
            )
            values[key] = sample.value
    return values


async def test_daemon_logs_json_serves_metrics_and_stops_on_sigterm(
    rig: HilRig, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "feederd.toml"
    journal = tmp_path / "state" / "journal.sqlite"
    config.write_text(_toml(rig, port, journal), encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        FEEDERD,
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    cycles: list[dict[str, object]] = []
    events: list[str] = []
    try:
        assert proc.stderr is not None
        # a daemon on the system clock: wait (a hang guard, not a deadline) for an interval
        # that dispatched with every device up, as one does on an idle feeder
        while not (
            cycles
            and cycles[-1]["status"] == "optimal"
            and cycles[-1]["devices_up"] == len(rig.devices)
            and len(cycles) >= 2
        ):
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, "daemon exited early"
            event = json.loads(line)  # every log line is one JSON object
            events.append(event["event"])
            if event["event"] == "cycle":
                cycles.append(event)
            assert len(cycles) < 30, cycles[-3:]
        metrics = await asyncio.to_thread(_scrape, port)
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 30)
        rest = await proc.stderr.read()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert rc == 0
    events += [json.loads(line)["event"] for line in rest.decode().splitlines()]
    assert events[-1] == "stopping", events[-5:]
    assert {"import_kw", "solve_ms", "poll_ms", "write_ms", "v_min_pu"} <= cycles[-1].keys()
    assert metrics["feederd_dr_import_limit_kw"] == 2000.0
    assert metrics["feederd_cycles_total{status=optimal}"] >= 1
    head = next(d.name for d in rig.devices if d.kind == "meter")
    assert metrics[f"feederd_device_up{{device={head},kind=meter}}"] == 1
    assert "feederd_solve_duration_seconds_count" in metrics
    assert any(k.startswith("feederd_setpoint_kw{") for k in metrics)
    assert journal.exists()
    assert oct(journal.stat().st_mode & 0o777) == "0o600"
