"""The ``[flex]`` table: its defaults, its bounds (one line naming the key), and ``enabled =
false`` leaving the daemon without a flex outlet."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.config import load_config
from tests.controller.test_config_cli import EXAMPLE, cli


def _with(tmp_path: Path, table: str) -> Path:
    path = tmp_path / "feederd.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8") + "\n[flex]\n" + table, encoding="utf-8")
    return path


def test_defaults_and_a_table_that_changes_them(tmp_path: Path) -> None:
    flex = load_config(EXAMPLE).config.flex
    assert (flex.enabled, flex.window_min, flex.points, flex.budget_fraction) == (
        True,
        60,
        4,
        0.2,
    )
    path = _with(tmp_path, "enabled = false\nwindow_min = 30\npoints = 6\nbudget_fraction = 0.1\n")
    flex = load_config(path).config.flex
    assert (flex.enabled, flex.window_min, flex.points, flex.budget_fraction) == (
        False,
        30,
        6,
        0.1,
    )


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("points = 1\n", "flex.points"),
        ("points = 17\n", "flex.points"),  # the contract's MAX_CURVE_POINTS
        ("window_min = 0\n", "flex.window_min"),
        ("budget_fraction = 0.9\n", "flex.budget_fraction"),
        ("budget_fraction = nan\n", "flex.budget_fraction"),
        ("window = 60\n", "flex.window"),
    ],
)
def test_bad_values_are_refused_on_one_line_naming_the_key(
    tmp_path: Path, table: str, key: str
) -> None:
    proc = cli("check", "--config", str(_with(tmp_path, table)))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert key in lines[0]


async def test_disabled_the_daemon_computes_and_publishes_no_flex() -> None:
    from controller.commands.rig.simulation import Simulation  # noqa: PLC0415
    from tests.support.feeder import RIG_DEFAULTS, TEST_DEFAULTS  # noqa: PLC0415

    async with Simulation.open(
        overrides={**TEST_DEFAULTS, "flex": {"enabled": False}}, rig_options=RIG_DEFAULTS
    ) as sim:
        await sim.step()
        assert sim.daemon.controller.flex is None
        assert sim.daemon.metrics.registry.get_sample_value("feederd_flex_solves_total") == 0
