"""The slack bus's voltage and the voltage limits the daemon dispatches with: from the head
meter, the config or the case; the case's limits when the config asks for them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.config import ConfigError, parse_config
from controller.snapshot import EstimatorState, Snapshot, dispatch_input, slack_voltage
from devices import MeterReading
from optimizer import builtin_case, load_matpower, solve_powerflow

FEEDERD = shutil.which("feederd", path=str(Path(sys.executable).parent)) or "feederd"
NET = load_matpower(builtin_case("case33bw"))  # 12.66 kV, the case's slack at 1.0 p.u.
HEAD = {
    "name": "head",
    "kind": "meter",
    "bus": 1,
    "transport": {"type": "tcp", "host": "192.0.2.1"},
    "head": True,
}


def _head(v_ll_v: float | None, p_kw: float = 3000.0) -> MeterReading:
    return MeterReading(device="head", p_kw=p_kw, q_kvar=None, v_ll_v=v_ll_v, a=None)


def _config(tmp_path: Path, case: str = "builtin:case33bw", **feeder: Any) -> Any:
    data = {"site": "t", "feeder": {"case": case, **feeder}, "devices": [HEAD]}
    return parse_config(data, source="f.toml", base_dir=tmp_path)


def test_the_head_meters_voltage_is_the_slack_voltage() -> None:
    sv = slack_voltage(_head(1.03 * 12_660.0), NET)
    assert sv.source == "meter"
    assert sv.v_pu == pytest.approx(1.03)
    assert sv.rejected is None


@pytest.mark.parametrize("v_ll_v", [None, 12_660.0 * 1.03])
def test_without_a_measurement_or_when_told_the_configured_value_is_used(
    v_ll_v: float | None,
) -> None:
    sv = slack_voltage(_head(v_ll_v), NET, from_meter=v_ll_v is None)
    assert (sv.source, sv.v_pu, sv.rejected) == ("config", 1.0, None)


@pytest.mark.parametrize("v_ll_v", [230.0, 12_660.0 * 1.5, float("nan"), 0.0])
def test_an_implausible_measurement_is_named_and_not_used(v_ll_v: float) -> None:
    """A meter on the wrong scale, or a case whose BASE_KV is not the busbar's."""
    sv = slack_voltage(_head(v_ll_v), NET)
    assert (sv.source, sv.v_pu) == ("config", 1.0)
    assert sv.rejected is not None
    assert "head meter 'head' reads" in sv.rejected
    assert "slack bus's base 12.66 kV" in sv.rejected


def test_the_load_estimate_and_the_dispatch_use_the_slack_voltage() -> None:
    """The same head import at a higher busbar voltage: fewer losses, so more load behind it,
    and the dispatch's voltages start from the measured busbar."""
    snap = Snapshot(
        cycle=1,
        taken_at=datetime(2026, 7, 1, tzinfo=UTC),
        head=_head(None, p_kw=3900.0),
        pv={},
        batteries={},
        missing=frozenset(),
    )
    inputs = {
        v: dispatch_input(
            snap,
            NET,
            pv_bus={},
            battery_bus={},
            ramp_kw_per_s={},
            state=EstimatorState(),
            interval_s=5.0,
            import_limit_kw=None,
            export_limit_kw=None,
            v_min_pu=0.9,
            v_max_pu=1.1,
            price_per_kwh=0.1,
            v_slack_pu=v,
        )
        for v in (1.0, 1.05)
    }
    assert inputs[1.05].v_slack_pu == 1.05
    assert sum(inputs[1.05].loads_kw.values()) > sum(inputs[1.0].loads_kw.values())
    for v, inp in inputs.items():  # each estimate meets the measured import at its voltage
        flow = solve_powerflow(NET, p_kw=inp.loads_kw, q_kvar=inp.loads_kvar, v_slack_pu=v)
        assert flow.import_kw == pytest.approx(3900.0, abs=0.5)


def test_the_configs_slack_voltage_replaces_the_cases(tmp_path: Path) -> None:
    loaded = _config(tmp_path, v_slack_pu=1.02)
    assert loaded.network.v_slack_pu == 1.02
    assert slack_voltage(_head(None), loaded.network).v_pu == 1.02


def test_a_slack_voltage_out_of_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"f\.toml: feeder\.v_slack_pu: .*less than or equal"):
        _config(tmp_path, v_slack_pu=1.5)


def _case_with_limits(
    tmp_path: Path, v_min: str, v_max: str, gens: str = "1 0 0 10 -10 1.01 10 1 10 0;\n"
) -> Path:
    case = tmp_path / "limits.m"
    case.write_text(
        "function mpc = limits\nmpc.version = '2';\nmpc.baseMVA = 10;\nmpc.bus = [\n"
        "1 3 0 0 0 0 1 1 0 11 1 2 0;\n"
        f"2 1 0.5 0.2 0 0 1 1 0 11 1 {v_max} {v_min};\n"
        "3 1 0.5 0.2 0 0 1 1 0 11 1 2 0;\n];\n"
        f"mpc.gen = [\n{gens}];\n"
        "mpc.branch = [\n1 2 0.01 0.02 0 0 0 0 0 0 1 -360 360;\n"
        "2 3 0.01 0.02 0 0 0 0 0 0 1 -360 360;\n];\n"
    )
    return case


def test_the_cases_limits_only_when_the_config_asks(tmp_path: Path) -> None:
    case = str(_case_with_limits(tmp_path, "0.97", "1.04"))
    assert _config(tmp_path, case=case).bus_bands_pu == {}
    bands = _config(tmp_path, case=case, voltage_limits="case", v_margin_pu=0.002).bus_bands_pu
    assert bands == {2: pytest.approx((0.972, 1.038))}  # buses 1 and 3: VMIN 0 / VMAX 2


def test_a_case_band_too_narrow_for_the_margin_is_named(tmp_path: Path) -> None:
    case = str(_case_with_limits(tmp_path, "1.0", "1.001"))
    with pytest.raises(ConfigError, match=r"feeder\.voltage_limits: bus 2's band in the case"):
        _config(tmp_path, case=case, voltage_limits="case")


def test_check_says_where_the_slack_voltage_comes_from(tmp_path: Path) -> None:
    gens = "1 0 0 10 -10 1.01 10 1 10 0;\n3 0.2 0.05 1 -1 1 10 1 1 0;\n"  # one elsewhere
    case = _case_with_limits(tmp_path, "0.97", "1.04", gens)
    path = tmp_path / "feederd.toml"
    path.write_text(
        f'site = "t"\n[feeder]\ncase = "{case.name}"\nvoltage_limits = "case"\n'
        '[[devices]]\nname = "head"\nkind = "meter"\nbus = 1\nhead = true\n'
        'transport = { type = "tcp", host = "192.0.2.1" }\n',
        encoding="utf-8",
    )
    proc = subprocess.run(
        [FEEDERD, "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "slack voltage: the head meter's voltage, else 1.01 p.u. (the case)" in proc.stdout
    assert "generator at bus 3: fixed injection 200 kW / 50 kvar" in proc.stdout
    assert "voltage limits from the case on 1 bus(es)" in proc.stdout
