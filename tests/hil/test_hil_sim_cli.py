"""``feederd sim``: a scenario run from the command line, bad input, and ``--serve``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from controller.cli import main
from controller.journal import Journal
from devices import ModbusTcpLink, RegisterMapLoad, load_register_map
from tests.support.net import free_block

REPO = Path(__file__).resolve().parents[2]

SHORT = """
name = "short"
description = "a one-minute check"
start = "18:00"
duration_s = 60

[controller]
interval_s = 5

[controller.poll]
timeout_s = 1.5
stale_after_intervals = 3

[[dr]]
start_s = 10
end_s = 60
import_limit_kw = 3000

[[fault]]
device = "pv18"
kind = "silent"
start_s = 20
end_s = 40
"""


def test_sim_runs_a_scenario_and_writes_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "short.toml"
    scenario.write_text(SHORT, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["sim", "--scenario", str(scenario), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "short from 18:00" in printed
    assert "DR compliance" in printed
    assert "x real time" in printed
    kpis = json.loads((out / "kpis.json").read_text(encoding="utf-8"))
    assert kpis["intervals"] == 12
    assert kpis["dr_intervals"] == 10
    assert kpis["device_missed_intervals"] >= 2
    assert (out / "overview.png").stat().st_size > 10_000
    log_lines = (out / "feederd.log").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in log_lines]
    events = [r["event"] for r in records]
    assert events.count("cycle") == 12
    # the silent PV's outage: one line on each change of its health, never a repetition
    pv18 = [r["event"] for r in records if r.get("device") == "pv18"]
    assert pv18 == ["device_degraded", "device_stale", "device_recovered"], pv18
    stale = next(r for r in records if r["event"] == "device_stale")
    assert stale["missed_intervals"] == 3
    assert stale["level"] == "error"
    # the daemon's journal is kept beside the results: the event's M&V reads it
    journal = out / "journal.sqlite"
    assert str(journal) in printed
    assert main(["event", "list", "--journal", str(journal)]) == 0
    capsys.readouterr()
    stored = Journal(journal)
    ids = [s.event.id for s in stored.events()]
    stored.close()
    assert len(ids) == 1
    assert main(["report", "--journal", str(journal), "--event", ids[0], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["event"]["id"] == ids[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sim", "--scenario", "no/such.toml"], "no/such.toml: cannot read scenario"),
        (["sim", "--serve", "--out", "x"], "--out, --compress, --uniform, --estimation and"),
        (["sim", "--serve", "--estimation", "on"], "--control go with --scenario, not --serve"),
        (["sim", "--serve", "--control", "firm_limits=false"], "go with --scenario, not --serve"),
        (
            ["sim", "--scenario", "evening_peak", "--base-port", "2000"],
            "--case, --base-port and --pv-model go with --serve",
        ),
        (["sim", "--serve", "--case", "no/such.m"], "--case no/such.m: no such file"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_a_bad_scenario_key_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text(SHORT.replace('device = "pv18"', 'device = "pv99"'), encoding="utf-8")
    assert main(["sim", "--scenario", str(scenario)]) == 2
    err = capsys.readouterr().err
    assert f"{scenario}: fault[0].device: no device 'pv99'" in err


def test_compress_out_of_range_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["sim", "--scenario", "evening_peak", "--compress", "0"])
    assert info.value.code == 2
    assert "must be within (0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("setting", "message"),
    [("x", "'x': expected KEY=VALUE"), ("x=yes", "'yes' is not a TOML value")],
)
def test_a_control_setting_that_is_not_key_value_is_refused(
    setting: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["sim", "--scenario", "evening_peak", "--control", setting])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unknown_control_key_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sim", "--scenario", "evening_peak", "--out", str(tmp_path), "--control", "bogus=1"]
    assert main(argv) == 2
    assert "controller.control.bogus: unknown key" in capsys.readouterr().err


@pytest.mark.integration
async def test_serve_announces_devices_that_answer_and_stops_on_sigterm() -> None:
    base = free_block(19)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controller.cli",
        "sim",
        "--serve",
        "--base-port",
        str(base),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        devices = json.loads(line)["devices"]
        assert len(devices) == 19
        assert {d["kind"] for d in devices} == {"pv", "battery", "meter", "load"}
        assert [d["port"] for d in devices] == list(range(base, base + 19))
        assert set(devices[0]) == {"name", "kind", "host", "port", "unit"}
        head = next(d for d in devices if d["kind"] == "meter")
        link = ModbusTcpLink(head["host"], head["port"], timeout_s=2.0)
        try:
            assert await link.read_holding("head", 40000, 2, head["unit"]) == [0x5375, 0x6E53]
        finally:
            await link.close()
        load = next(d for d in devices if d["kind"] == "load")
        drv = RegisterMapLoad(
            load["name"],
            ModbusTcpLink(load["host"], load["port"], timeout_s=2.0),
            load["unit"],
            load_register_map("builtin:controllable_load"),
            rating_kw=100.0,
            min_kw=0.0,
            revert_s=60,
        )
        try:  # a controllable load on the bundled register map, drawing its demand
            assert 0.0 < (await drv.read()).p_kw <= 100.0
        finally:
            await drv.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.integration
@pytest.mark.parametrize("control", [[], ["--control", "horizon_h=0"]])
def test_sim_runs_the_announced_event_with_and_without_the_horizon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], control: list[str]
) -> None:
    """The bundled announced event (compressed to five intervals; over MQTT), with the default
    horizon and with ``--control horizon_h=0``: each prints its event's and its day's figures
    and writes the days plot (it has a tariff)."""
    out = tmp_path / "out"
    argv = ["sim", "--scenario", "announced_evening_event", "--compress", "0.05"]
    assert main([*argv, "--out", str(out), *control]) == 0
    printed = capsys.readouterr().out
    assert "announced-evening-event from 12:00, 0.45 h at 300 s (5 intervals)" in printed
    assert "event 2026-08-26T12:15+02:00 import cap 3100 kW: compliance" in printed
    assert "SoC" in printed
    assert "2026-08-26: compliance" in printed
    kpis = json.loads((out / "kpis.json").read_text(encoding="utf-8"))
    assert kpis["dr_intervals"] == 2
    assert kpis["energy_cost"] is not None
    assert [d["day"] for d in kpis["days"]] == ["2026-08-26"]
    assert (out / "days.png").stat().st_size > 10_000
