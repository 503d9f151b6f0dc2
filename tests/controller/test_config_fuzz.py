"""Fuzzed configs (issue 11): every mutation of the example config or of a rig-style config
either passes ``feederd check`` and is accepted by the run path (``load_config``, the run
command's settings, the fleet, the daemon entered and left), or is refused by both with the
same single line and exit 2, never a traceback. Configs whose numbers are accepted dispatch.

The mutations and the two paths are in ``config_fuzz.py`` (``benchmarks/fuzz_config.py`` runs
1,000 of them and prints the counts)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.config import LoadedConfig
from devices.safety import BatteryCommand, LoadCommand, PvCommand
from optimizer import DispatchStatus
from tests.controller.config_fuzz import (
    Files,
    dispatch_once,
    evaluate,
    example_base,
    make_files,
    mutate,
    mutate_numbers,
    rig_base,
)
from tests.support.tls import make_certs

T = TypeVar("T")

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class DataChooser:
    """The mutation's choices, drawn by hypothesis (so a failure shrinks)."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def choice(self, seq: Sequence[T]) -> T:
        return self.data.draw(st.sampled_from(seq))

    def randint(self, a: int, b: int) -> int:
        return self.data.draw(st.integers(a, b))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    d = tmp_path_factory.mktemp("fuzz")
    (d / "certs").mkdir()
    return make_files(d, certs=make_certs(d / "certs"))


def _base(name: str, files: Files) -> dict[str, Any]:
    return example_base(files) if name == "example" else rig_base(files)


@pytest.mark.parametrize("name", ["example", "rig"])
def test_the_bases_pass_check_and_run(files: Files, name: str) -> None:
    from tests.controller.config_fuzz import to_toml  # noqa: PLC0415

    outcome = evaluate(to_toml(_base(name, files)).encode(), files)
    assert outcome.problems == []
    assert outcome.result == "accepted"


@FUZZ
@given(data=st.data(), name=st.sampled_from(["example", "rig"]))
def test_a_mutated_config_passes_check_and_run_or_fails_both_in_one_line(
    files: Files, data: st.DataObject, name: str
) -> None:
    text = mutate(_base(name, files), DataChooser(data), files)
    outcome = evaluate(text, files)
    assert outcome.problems == [], "\n".join(outcome.problems)


def _dispatches(loaded: LoadedConfig) -> None:
    result, commands = dispatch_once(loaded)
    assert result.status.has_setpoints, result.message
    for value in (*result.pv_kw.values(), *result.battery_kw.values()):
        assert math.isfinite(value)
    if result.status is not DispatchStatus.FALLBACK:  # the LP's estimates
        assert math.isfinite(result.import_kw)
        assert math.isfinite(result.losses_kw)
    for command in commands.values():
        assert isinstance(command, PvCommand | BatteryCommand | LoadCommand)
        for field in ("limit_pct", "rate_pct", "p_kw", "p_max_kw", "revert_s"):
            value = getattr(command, field, None)
            assert value is None or math.isfinite(value), command


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(data=st.data(), name=st.sampled_from(["example", "rig"]))
def test_a_config_whose_numbers_are_accepted_dispatches(
    files: Files, data: st.DataObject, name: str
) -> None:
    """The issue's `dr.price_per_kwh = nan` passed check and crashed run at the first
    dispatch: numbers at the edges of their ranges, once accepted, dispatch on the 33-bus
    case and give finite setpoints."""
    text = mutate_numbers(_base(name, files), DataChooser(data))
    outcome = evaluate(text, files)
    assert outcome.problems == [], "\n".join(outcome.problems)
    if outcome.loaded is not None:
        _dispatches(outcome.loaded)


@pytest.mark.parametrize(
    "values",
    [
        {"price_per_kwh": 1000.0, "import_limit_kw": -1e6},
        {"price_per_kwh": -1000.0, "import_limit_kw": 1e6, "export_limit_kw": 0.0},
        {"price_per_kwh": 0.0, "export_limit_kw": 1e6},
        {"price_per_kwh": 0.12, "import_limit_kw": 0.0},
    ],
)
def test_the_edges_of_the_dr_values_dispatch(files: Files, values: dict[str, float]) -> None:
    doc = example_base(files)
    doc["dr"] = {k: v for k, v in doc["dr"].items() if k != "import_limit_kw"} | values
    doc["devices"][1]["ramp_kw_per_s"] = 0.001
    doc["devices"][3]["energy_kwh"] = 0.01
    doc["devices"][4]["shed_cost_per_kwh"] = 1000.0
    from tests.controller.config_fuzz import to_toml  # noqa: PLC0415

    outcome = evaluate(to_toml(doc).encode(), files)
    assert outcome.problems == []
    assert outcome.loaded is not None
    _dispatches(outcome.loaded)


def test_the_nan_and_overflow_of_the_issue_are_refused_by_both(files: Files) -> None:
    from tests.controller.config_fuzz import to_toml  # noqa: PLC0415

    for section, key, value in (
        ("dr", "import_limit_kw", math.nan),
        ("dr", "price_per_kwh", math.nan),
        ("journal", "retention_days", 999_999_999_999),
        ("poll", "timeout_s", 1e308),
    ):
        doc = example_base(files)
        doc[section][key] = value
        outcome = evaluate(to_toml(doc).encode(), files)
        assert outcome.problems == []
        assert outcome.result == "refused"
        assert f"{section}.{key}: " in outcome.message
    doc = rig_base(files)
    doc["devices"][-2]["rating_kw"] = math.inf  # a battery
    outcome = evaluate(to_toml(doc).encode(), files)
    assert outcome.problems == []
    assert outcome.result == "refused"
    assert "rating_kw: must be a finite number (got inf)" in outcome.message


def test_files_fixture_has_every_kind(files: Files) -> None:
    assert Path(files.dir / "fifo").is_fifo()
    assert (files.dir / "folder").is_dir()
