"""`feederd powerflow`, `feederd solve` and `feederd bench dispatch`, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import highspy
import pytest

from controller.cli import main
from optimizer import builtin_case

CASE33 = str(builtin_case("case33bw"))
FEEDERD = str(Path(sys.executable).parent / "feederd")


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, object]:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out  # one JSON object, nothing else
    data: dict[str, object] = json.loads(out)
    return data


def test_powerflow_gives_baran_and_wu(capsys: pytest.CaptureFixture[str]) -> None:
    out = _json(capsys, ["powerflow", "--case", CASE33, "--json"])
    assert out["losses_kw"] == pytest.approx(202.7, rel=0.005)
    assert out["v_min_pu"] == pytest.approx(0.9131, abs=0.001)
    assert out["v_min_bus"] == 18
    assert out["import_kw"] == pytest.approx(3715.0 + 202.677, abs=0.1)
    assert isinstance(out["iterations"], int)


def test_solve_with_synthetic_ders_and_mps(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    mps = tmp_path / "lp.mps"
    out = _json(
        capsys,
        ["solve", "--case", CASE33, "--json", "--synthetic-ders", "--write-mps", str(mps)],
    )
    assert out["status"] == "optimal"
    assert out["import_limit_kw"] == pytest.approx(0.7 * 3715.0)
    ac = out["ac"]
    assert isinstance(ac, dict)
    assert out["losses_kw"] == pytest.approx(ac["losses_kw"], rel=0.03)
    assert out["v_min_pu"] == pytest.approx(ac["v_min_pu"], abs=0.005)
    assert isinstance(out["solve_ms"], float)
    # the MPS file is the LP solved: HiGHS reading it finds the same optimum (MPS carries no
    # objective constant, so the command reports it)
    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    h.readModel(str(mps))
    h.run()
    constant = out["objective_constant"]
    assert isinstance(constant, float)
    assert h.getInfo().objective_function_value + constant == pytest.approx(
        out["objective"], rel=1e-6
    )


def test_solve_reports_an_unmeetable_limit_by_its_slack(capsys: pytest.CaptureFixture[str]) -> None:
    out = _json(capsys, ["solve", "--case", CASE33, "--json", "--import-limit-kw", "1000"])
    assert out["status"] == "limit_relaxed"
    assert out["import_slack_kw"] == pytest.approx(out["import_kw"] - 1000.0, abs=0.01)  # type: ignore[operator]


def test_bench_dispatch_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    out = _json(
        capsys,
        ["bench", "dispatch", "--case", CASE33, "--synthetic-ders", "--intervals", "5", "--json"],
    )
    for key in ("build_ms", "interval_ms_median", "interval_ms_p95", "raw_highs_cold_ms"):
        assert out[key] > 0, key  # type: ignore[operator]
    assert out["n_vars"] > 0  # type: ignore[operator]
    assert out["n_cons"] > 0  # type: ignore[operator]
    assert out["builds"] == 1
    assert out["statuses"] == {"optimal": 5}


def test_bench_dispatch_horizon_on_a_synthetic_feeder(capsys: pytest.CaptureFixture[str]) -> None:
    out = _json(
        capsys,
        [
            "bench",
            "dispatch",
            "--synthetic-feeder",
            "40",
            "--synthetic-ders",
            "--horizon",
            "3",
            "--intervals",
            "3",
        ],
    )
    assert out["horizon"] == 3
    assert out["buses"] == 40


def test_bench_dispatch_multi_resolution_against_a_reference(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The daemon's horizon shape (fine steps, then blocks), the full network on step 0 only
    by default or on every step when asked, and the median's ratio to a reference figure."""
    argv = [
        *("bench", "dispatch", "--synthetic-feeder", "40", "--synthetic-ders"),
        *("--horizon-h", "2", "--fine-steps", "2", "--block-s", "900", "--intervals", "3"),
        *("--cold-runs", "1", "--compare-ms", "600", "--compare-label", "emhass"),
    ]
    out = _json(capsys, argv)
    assert out["horizon"] == 2 + 8  # 2 × 300 s, then 6600 s in 900 s blocks (the last 300 s)
    assert out["horizon_h"] == pytest.approx(2.0)
    assert out["network_steps"] == 1
    assert out["failures"] == 0
    assert out["solved"] == 3
    assert out["vs_emhass"] == pytest.approx(out["interval_ms_median"] / 600.0, rel=1e-3)  # type: ignore[operator]
    assert out["peak_rss_mb"] > 0  # type: ignore[operator]
    full = _json(capsys, [*argv, "--network-steps", "all"])
    assert full["network_steps"] == 10
    assert full["n_cons"] > out["n_cons"]  # type: ignore[operator]


def test_bench_dispatch_counts_timed_out_intervals_as_failures_never_as_times(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = _json(
        capsys,
        [
            *("bench", "dispatch", "--synthetic-feeder", "40", "--synthetic-ders"),
            *("--horizon", "3", "--intervals", "3", "--cold-runs", "0"),
            *("--time-limit-s", "0.000001"),
        ],
    )
    assert out["statuses"] == {"timed_out": 3}
    assert out["failures"] == 3
    assert out["solved"] == 0
    assert out["interval_ms_median"] is None
    assert out["interval_ms_p95"] is None


def test_solve_with_a_multi_resolution_horizon(capsys: pytest.CaptureFixture[str]) -> None:
    out = _json(
        capsys,
        [
            *("solve", "--case", CASE33, "--json", "--synthetic-ders", "--passes", "1"),
            *("--horizon-h", "3", "--fine-steps", "4", "--interval-s", "300"),
        ],
    )
    assert out["status"] == "optimal"
    assert out["step_s"] == [300.0] * 4 + [900.0] * 10 + [600.0]
    assert len(out["import_plan_kw"]) == 15  # type: ignore[arg-type]
    assert out["network_steps"] == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no such case file"),
        ("loop", "is not radial: branch 2-3 closes a loop through bus 3"),
        ("island", "not connected to slack bus 1 (islanded)"),
        ("negative", "branch 1-2: r_pu must be >= 0"),
    ],
)
def test_bad_cases_get_one_line(
    tmp_path: Path, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    case = _bad_case(tmp_path, text)
    for command in ("powerflow", "solve"):
        assert main([command, "--case", str(case), "--json"]) == 2
        out = capsys.readouterr()
        assert out.out == ""
        lines = out.err.strip().splitlines()
        assert len(lines) == 1, out.err
        assert message in lines[0]


def test_a_bad_case_through_the_installed_command_is_one_line_and_exit_2(tmp_path: Path) -> None:
    case = _bad_case(tmp_path, "loop")
    proc = subprocess.run(
        [FEEDERD, "solve", "--case", str(case), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"feederd: {case}: network 'bad' is not radial: branch 2-3 closes a loop through bus 3"
    ], proc.stderr


def _bad_case(tmp_path: Path, text: str) -> Path:
    branches = {
        "": "",
        "loop": "1 2 0.01 0.01 0 0 0 0 0 0 1 -360 360;\n2 3 0.01 0.01 0 0 0 0 0 0 1 -360 360;\n"
        "3 1 0.01 0.01 0 0 0 0 0 0 1 -360 360;",
        "island": "1 2 0.01 0.01 0 0 0 0 0 0 1 -360 360;",
        "negative": "1 2 -0.01 0.01 0 0 0 0 0 0 1 -360 360;\n2 3 0.01 0.01 0 0 0 0 0 0 1 -360 360;",
    }[text]
    case = tmp_path / "bad.m"
    if text:
        case.write_text(
            "function mpc = bad\nmpc.version = '2';\nmpc.baseMVA = 10;\nmpc.bus = [\n"
            "1 3 0 0 0 0 1 1 0 12.66 1 1.1 0.9;\n2 1 0.1 0.05 0 0 1 1 0 12.66 1 1.1 0.9;\n"
            "3 1 0.1 0.05 0 0 1 1 0 12.66 1 1.1 0.9;\n];\n"
            "mpc.gen = [\n1 0 0 10 -10 1 100 1 10 0 0 0 0 0 0 0 0 0 0 0 0;\n];\n"
            f"mpc.branch = [\n{branches}\n];\n"
        )
    return case
