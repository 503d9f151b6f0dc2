"""AC model fidelity (issue 12): any valid MATPOWER feeder, its slack voltage, charging, taps.

Every feeder of `tests.support.feeders` (public networks through pandapower's converter, the
synthetic feeders, hand-made IEEE 33-bus variants) is read by `load_matpower` and its power flow
compared with pandapower's (`tests.support.reference`): losses within 0.5 %, every bus voltage
and so the lowest within 0.001 p.u. The LP's estimates at the dispatched point (PV and
batteries as `feederd solve --synthetic-ders` places them) are held to 3 % and 0.005 p.u. of
the AC power flow there. The reference itself is checked against pandapower's published
33-bus figures and against a second engine (MATPOWER's branch model, Newton–Raphson).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from controller.cli import main
from optimizer import (
    Network,
    PowerFlowResult,
    builtin_case,
    load_matpower,
    solve_powerflow,
)
from tests.support.feeders import (
    FEEDERS,
    MV_CABLE,
    Dispatched,
    dispatched_point,
    summary,
    variant,
)
from tests.support.reference import Reference, describe, matpower_flow, reference

LOSS_REL = 0.005
V_ABS = 0.001
LP_LOSS_REL = 0.03
LP_V_ABS = 0.005
FEEDERD = shutil.which("feederd", path=str(Path(sys.executable).parent)) or "feederd"


@dataclass
class Feeders:
    """The test feeders of one module, each written and solved by the reference once."""

    directory: Path
    paths: dict[str, Path] = field(default_factory=dict)
    refs: dict[str, Reference] = field(default_factory=dict)
    points: dict[tuple[str, float], Dispatched] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        if name not in self.paths:
            self.paths[name] = FEEDERS[name](self.directory)
        return self.paths[name]

    def ref(self, name: str) -> Reference:
        if name not in self.refs:
            path = builtin_case("case33bw") if name == "case33bw" else self.path(name)
            self.refs[name] = reference(path)
        return self.refs[name]

    def net(self, name: str) -> Network:
        return load_matpower(self.path(name))

    def dispatched(self, name: str, pv_available: float) -> Dispatched:
        key = (name, pv_available)
        if key not in self.points:
            self.points[key] = dispatched_point(self.net(name), pv_available=pv_available)
        return self.points[key]


@pytest.fixture(scope="module")
def feeders(tmp_path_factory: pytest.TempPathFactory) -> Feeders:
    return Feeders(tmp_path_factory.mktemp("feeders"))


def file_flow(net: Network) -> PowerFlowResult:
    """The power flow of the file: its loads, everything else the network holds."""
    return solve_powerflow(net, p_kw=net.loads_kw, q_kvar=net.loads_kvar)


def assert_matches(ours: PowerFlowResult, ref: Reference, what: str) -> None:
    """Losses within 0.5 %, every bus (and so the lowest) within 0.001 p.u. of the reference."""
    assert ours.converged, what
    assert ref.converged, what
    assert set(ours.v_pu) == set(ref.v_pu), f"{what}: buses differ"
    worst = max(ref.v_pu, key=lambda b: abs(ours.v_pu[b] - ref.v_pu[b]))
    assert abs(ours.v_pu[worst] - ref.v_pu[worst]) <= V_ABS, (
        f"{what}: bus {worst} at {ours.v_pu[worst]:.5f} p.u., reference "
        f"{ref.v_pu[worst]:.5f} ({describe(ref)})"
    )
    assert abs(ours.v_min_pu - ref.v_min_pu) <= V_ABS, f"{what}: {describe(ref)}"
    assert ours.losses_kw == pytest.approx(ref.series_losses_kw, rel=LOSS_REL), (
        f"{what}: losses {ours.losses_kw:.3f} kW; reference {describe(ref)}"
    )


# --- the reference itself ---------------------------------------------------------------------


def test_reference_gives_pandapowers_figures_for_case33() -> None:
    ref = reference(builtin_case("case33bw"))
    assert ref.converged
    assert ref.losses_kw == pytest.approx(202.68, abs=0.01)
    assert ref.series_losses_kw == pytest.approx(202.68, abs=0.01)
    assert ref.v_min_pu == pytest.approx(0.91309, abs=1e-5)
    assert ref.v_min_bus == 18
    assert ref.import_kw == pytest.approx(3715.0 + 202.68, abs=0.01)


@pytest.mark.parametrize("name", FEEDERS)
def test_reference_agrees_with_matpowers_model(feeders: Feeders, name: str) -> None:
    """pandapower through its converter, and MATPOWER's branch equations solved directly, are
    the same power flow of the file (so the converter's reading is the file's meaning)."""
    ref = feeders.ref(name)
    second = matpower_flow(feeders.path(name))
    assert ref.converged
    assert second.converged
    assert set(ref.v_pu) == set(second.v_pu)
    assert max(abs(ref.v_pu[b] - second.v_pu[b]) for b in ref.v_pu) < 1e-7
    assert ref.losses_kw == pytest.approx(second.losses_kw, rel=1e-6, abs=1e-6)
    assert ref.series_losses_kw == pytest.approx(second.series_losses_kw, rel=1e-6, abs=1e-6)
    assert ref.import_kvar == pytest.approx(second.import_kvar, rel=1e-6, abs=1e-6)


def _moved(a: Reference, b: Reference) -> bool:
    """Whether two power flows differ by at least twice the tolerances."""
    return (
        abs(a.series_losses_kw - b.series_losses_kw) > 2 * LOSS_REL * b.series_losses_kw
        or abs(a.v_min_pu - b.v_min_pu) > 2 * V_ABS
    )


@pytest.mark.parametrize(
    "name",
    [
        "case33_slack103",
        "case33_slack098",
        "case33_cable",
        "case33_tap_head",
        "case33_tap_far",
        "case33_shunts",
        "case33_dg",
    ],
)
def test_each_hand_made_feature_moves_the_power_flow(feeders: Feeders, name: str) -> None:
    """A control on the feeders: an engine that ignored the feature would fail the targets."""
    assert _moved(feeders.ref(name), feeders.ref("case33bw"))


@pytest.mark.parametrize("name", MV_CABLE)
def test_mv_cable_charging_and_slack_voltage_move_the_power_flow(
    feeders: Feeders, name: str, tmp_path: Path
) -> None:
    """A control: on the converted MV networks, charging and (for a slack away from 1 p.u.)
    the slack voltage each change the result by more than the targets allow."""
    path, ref = feeders.path(name), feeders.ref(name)
    assert _moved(ref, reference(variant(path, tmp_path / "no_b.m", charging=False)))
    assert ref.v_slack_pu != 1.0
    assert _moved(ref, reference(variant(path, tmp_path / "flat.m", slack_v_pu=1.0)))


# --- the file as feederd reads it -------------------------------------------------------------


@pytest.mark.parametrize("name", FEEDERS)
def test_load_matpower_accepts_the_file(feeders: Feeders, name: str) -> None:
    path = feeders.path(name)
    facts = summary(path)
    net = load_matpower(path)
    assert len(net.buses) == facts["buses"]
    assert net.v_slack_pu == pytest.approx(facts["slack_v_pu"])
    assert len(net.generators) == facts["fixed_gens"]
    assert net.total_load_kw == pytest.approx(facts["load_mw"] * 1000.0)


def test_hand_made_elements_are_read(feeders: Feeders) -> None:
    shunts = {b.id: b for b in feeders.net("case33_shunts").buses}
    assert (shunts[30].bs_kvar, shunts[14].bs_kvar, shunts[18].gs_kw) == pytest.approx(
        (600.0, 300.0, 50.0)
    )
    cable = feeders.net("case33_cable")
    assert all(br.b_pu > 0 for br in cable.branches)
    dg = feeders.net("case33_dg")
    gens = sorted((g.bus, g.p_kw, g.q_kvar) for g in dg.generators)
    assert [g[0] for g in gens] == [18, 25]
    assert [g[1:] for g in gens] == [pytest.approx((400.0, 100.0)), pytest.approx((300.0, -50.0))]
    limits = feeders.net("case33_limits")
    assert not limits.has_bus(34)  # the isolated bus
    assert {b.id: b.v_min_pu for b in limits.buses}[7] is None  # NaN
    assert all(
        b.v_min_pu is None and b.v_max_pu is None for b in feeders.net("case33_no_limits").buses
    )
    assert feeders.net("case33_tap_head").slack_bus == 34


# --- the power flow of the file ---------------------------------------------------------------


@pytest.mark.parametrize("name", FEEDERS)
def test_powerflow_matches_the_reference(feeders: Feeders, name: str) -> None:
    assert_matches(file_flow(feeders.net(name)), feeders.ref(name), name)


@pytest.mark.parametrize("name", FEEDERS)
def test_import_accounts_for_shunts_and_generation(feeders: Feeders, name: str) -> None:
    """Losses defined without any model (import − load + generation − shunt conductance's P at
    the bus voltage) match too: nothing is left out of the import."""
    net, ref = feeders.net(name), feeders.ref(name)
    ours = file_flow(net)
    shunt_kw = math.fsum(b.gs_kw * ours.v_pu[b.id] ** 2 for b in net.buses)
    gen_kw = math.fsum(g.p_kw for g in net.generators)
    losses = ours.import_kw - net.total_load_kw + gen_kw - shunt_kw
    assert losses == pytest.approx(ref.losses_kw, rel=LOSS_REL), describe(ref)


# --- the LP at the dispatched point -----------------------------------------------------------


LP_CASES = [
    pytest.param(name, pv, id=f"{name}-pv{pv}")
    for name in FEEDERS
    for pv in ((0.8,) if name == "synthetic1000" else (0.8, 0.2))  # 1,000 buses: once (~10 s)
]


@pytest.mark.parametrize(("name", "pv_available"), LP_CASES)
def test_lp_estimates_at_the_dispatched_point(
    feeders: Feeders, name: str, pv_available: float
) -> None:
    """The LP's losses within 3 % and lowest voltage within 0.005 p.u. of the AC power flow at
    the point it dispatched (with the sun as `feederd solve --synthetic-ders` has it, and low)."""
    net = feeders.net(name)
    point = feeders.dispatched(name, pv_available)
    res = point.result
    assert res.status.has_setpoints, res.message
    ac = solve_powerflow(net, p_kw=point.p_kw, q_kvar=point.q_kvar)
    assert ac.converged
    assert res.losses_kw == pytest.approx(ac.losses_kw, rel=LP_LOSS_REL), (
        f"LP {res.losses_kw:.3f} kW, AC {ac.losses_kw:.3f} kW"
    )
    assert abs(res.v_min_pu - ac.v_min_pu) <= LP_V_ABS, (
        f"LP {res.v_min_pu:.5f} p.u. at {res.v_min_bus}, AC {ac.v_min_pu:.5f} at {ac.v_min_bus}"
    )


@pytest.mark.parametrize("name", FEEDERS)
def test_powerflow_at_the_dispatched_point_matches_the_reference(
    feeders: Feeders, name: str, tmp_path: Path
) -> None:
    """What the LP is checked against is right there too: with the sun as `feederd solve
    --synthetic-ders` has it, flows reverse and the PV inverters' reactive power moves."""
    point = feeders.dispatched(name, 0.8)
    assert point.result.status.has_setpoints, point.result.message
    net = feeders.net(name)
    ours = solve_powerflow(net, p_kw=point.p_kw, q_kvar=point.q_kvar)
    at_point = variant(
        feeders.path(name), tmp_path / "dispatched.m", p_kw=point.p_kw, q_kvar=point.q_kvar
    )
    assert_matches(ours, reference(at_point), f"{name} at the dispatched point")


# --- the command line -------------------------------------------------------------------------


def test_cli_powerflow_reads_a_converted_file(feeders: Feeders) -> None:
    """`feederd powerflow` as a user runs it on a converter's file (VMIN 0 / VMAX 2, slack at
    1.03 p.u.): exit 0 and the reference's figures, the slack voltage taken from the file."""
    path = feeders.path("cigre_mv")
    assert "[0, 2]" in summary(path)["limits"]
    proc = subprocess.run(
        [FEEDERD, "powerflow", "--case", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    ref = feeders.ref("cigre_mv")
    assert out["converged"] is True
    assert abs(out["v_min_pu"] - ref.v_min_pu) <= V_ABS, describe(ref)
    assert out["losses_kw"] == pytest.approx(ref.series_losses_kw, rel=LOSS_REL), describe(ref)


def test_cli_solve_reads_a_converted_file(
    feeders: Feeders, capsys: pytest.CaptureFixture[str]
) -> None:
    """`feederd solve --synthetic-ders` on a converter's file: exit 0, and its own comparison
    of the LP's estimates with the AC power flow at the dispatched point within the targets
    (the LP's accuracy on every feeder is `test_lp_estimates_at_the_dispatched_point`'s)."""
    path = feeders.path("cigre_mv")
    assert main(["solve", "--case", str(path), "--synthetic-ders", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ac: Mapping[str, float] = out["ac"]
    assert out["losses_kw"] == pytest.approx(ac["losses_kw"], rel=LP_LOSS_REL)
    assert abs(out["v_min_pu"] - ac["v_min_pu"]) <= LP_V_ABS
