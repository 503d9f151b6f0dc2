"""The feeder model: MATPOWER import, inline tables, and validation errors that name the element."""

from __future__ import annotations

from pathlib import Path

import pytest

from optimizer import Branch, Bus, Network, NetworkError, load_matpower, network_from_tables
from optimizer.network import Generator, write_matpower


def _bus(bus_id: int, p_kw: float = 10.0) -> Bus:
    return Bus(id=bus_id, p_load_kw=p_kw, q_load_kvar=p_kw / 2, base_kv=12.66)


def _line(a: int, b: int, r: float = 0.01, x: float = 0.01) -> Branch:
    return Branch(from_bus=a, to_bus=b, r_pu=r, x_pu=x, rating_kva=None)


def _network(branches: tuple[Branch, ...], n_buses: int = 4) -> Network:
    return Network(
        name="t",
        base_mva=10.0,
        slack_bus=1,
        buses=tuple(_bus(i) for i in range(1, n_buses + 1)),
        branches=branches,
    )


def test_case33bw_loads(case33: Network) -> None:
    assert len(case33.buses) == 33
    assert len(case33.branches) == 32
    assert case33.total_load_kw == pytest.approx(3715.0)
    assert case33.total_load_kvar == pytest.approx(2300.0)
    assert case33.slack_bus == 1
    assert case33.base_mva == 10.0
    assert case33.order[0] == 1
    assert set(case33.order) == set(case33.bus_ids)
    assert case33.parent[18] == 17
    assert case33.children[2] == (3, 19)
    assert case33.branch_to(19).from_bus == 2
    assert case33.bus(18).p_load_kw == pytest.approx(90.0)


def test_order_is_root_first(case33: Network) -> None:
    seen = {case33.slack_bus}
    for bus_id in case33.order[1:]:
        assert case33.parent[bus_id] in seen
        seen.add(bus_id)


def test_loop_is_named() -> None:
    branches = (_line(1, 2), _line(2, 3), _line(3, 4), _line(4, 2))
    with pytest.raises(NetworkError, match=r"not radial: branch (4-2|3-4) closes a loop"):
        _network(branches)


def test_islanded_bus_is_named() -> None:
    with pytest.raises(NetworkError, match=r"bus\(es\) 4 not connected .*islanded"):
        _network((_line(1, 2), _line(2, 3)))


def test_negative_impedance_is_named() -> None:
    with pytest.raises(NetworkError, match=r"branch 2-3: r_pu must be >= 0, got -0.01"):
        _network((_line(1, 2), _line(2, 3, r=-0.01), _line(3, 4)))


def test_unknown_bus_is_named() -> None:
    with pytest.raises(NetworkError, match=r"branch 3-9: unknown bus 9"):
        _network((_line(1, 2), _line(2, 3), _line(3, 4), _line(3, 9)))


def test_unknown_bus_lookup() -> None:
    net = _network((_line(1, 2), _line(2, 3), _line(3, 4)))
    with pytest.raises(NetworkError, match="has no bus 7"):
        net.bus(7)


def test_out_of_service_branch_takes_no_part() -> None:
    loop_open = Branch(from_bus=4, to_bus=2, r_pu=0.01, x_pu=0.01, in_service=False)
    net = _network((_line(1, 2), _line(2, 3), _line(3, 4), loop_open))
    assert net.parent[4] == 3


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.m"
    with pytest.raises(NetworkError, match=r"nope\.m: cannot read MATPOWER case"):
        load_matpower(missing)


def test_unparsable_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.m"
    bad.write_text("this is not matpower\n")
    with pytest.raises(NetworkError, match=r"bad\.m: cannot read MATPOWER case"):
        load_matpower(bad)


def test_out_of_service_branch_dropped_and_tap_zero_is_one(tmp_path: Path) -> None:
    case = tmp_path / "tiny.m"
    case.write_text(
        "function mpc = tiny\nmpc.version = '2';\nmpc.baseMVA = 1;\nmpc.bus = [\n"
        "1 3 0 0 0 0 1 1 0 11 1 1.1 0.9;\n2 1 0.1 0.05 0 0 1 1 0 11 1 1.1 0.9;\n"
        "3 1 0.2 0.1 0 0 1 1 0 11 1 1.1 0.9;\n];\n"
        "mpc.gen = [\n1 0 0 10 -10 1 1 1 10 0;\n];\n"
        "mpc.branch = [\n1 2 0.01 0.02 0 0 0 0 0 0 1 -360 360;\n"
        "2 3 0.01 0.02 0 5 0 0 1.05 0 1 -360 360;\n"
        "1 3 0.01 0.02 0 0 0 0 0 0 0 -360 360;\n];\n"
    )
    net = load_matpower(case)
    assert len(net.branches) == 2
    assert net.branch_to(2).tap == 1.0
    assert net.branch_to(3).tap == 1.05
    assert net.branch_to(3).rating_kva == pytest.approx(5000.0)
    assert net.total_load_kw == pytest.approx(300.0)


def test_network_from_tables_converts_ohms() -> None:
    net = network_from_tables(
        name="inline",
        base_mva=10.0,
        slack_bus=1,
        buses=[
            {"id": 1, "p_kw": 0.0, "q_kvar": 0.0, "base_kv": 12.66},
            {"id": 2, "p_kw": 100.0, "q_kvar": 60.0, "base_kv": 12.66, "v_min_pu": 0.92},
        ],
        branches=[{"from_bus": 1, "to_bus": 2, "r_ohm": 0.0922, "x_ohm": 0.0470}],
    )
    z_base = 12.66**2 / 10.0
    assert net.branch_to(2).r_pu == pytest.approx(0.0922 / z_base)
    assert net.branch_to(2).x_pu == pytest.approx(0.0470 / z_base)
    assert net.bus(2).v_min_pu == 0.92
    assert net.total_load_kw == 100.0


def test_network_from_tables_names_missing_field() -> None:
    with pytest.raises(NetworkError, match=r"branch row 0: missing field 'x_ohm'"):
        network_from_tables(
            name="inline",
            base_mva=10.0,
            slack_bus=1,
            buses=[
                {"id": 1, "p_kw": 0.0, "q_kvar": 0.0, "base_kv": 12.66},
                {"id": 2, "p_kw": 1.0, "q_kvar": 0.0, "base_kv": 12.66},
            ],
            branches=[{"from_bus": 1, "to_bus": 2, "r_ohm": 0.1}],
        )


def _case(tmp_path: Path, bus: str, gen: str, branch: str) -> Path:
    path = tmp_path / "feeder.m"
    path.write_text(
        f"function mpc = feeder\nmpc.version = '2';\nmpc.baseMVA = 10;\n"
        f"mpc.bus = [\n{bus}];\nmpc.gen = [\n{gen}];\nmpc.branch = [\n{branch}];\n"
    )
    return path


BRANCHES = "1 2 0.01 0.02 0 0 0 0 0 0 1 -360 360;\n2 3 0.01 0.02 0 0 0 0 0 0 1 -360 360;\n"


def test_converter_limits_mean_no_limit(tmp_path: Path) -> None:
    """VMIN 0 / VMAX 2 (what converters write for "none"), NaN, and a real band."""
    case = _case(
        tmp_path,
        "1 3 0 0 0 0 1 1 0 11 1 2 0;\n2 1 0.1 0.05 0 0 1 1 0 11 1 NaN NaN;\n"
        "3 1 0.1 0.05 0 0 1 1 0 11 1 1.06 0.94;\n",
        "1 0 0 10 -10 1 10 1 10 0;\n",
        BRANCHES,
    )
    net = load_matpower(case)
    assert (net.bus(1).v_min_pu, net.bus(1).v_max_pu) == (None, None)
    assert (net.bus(2).v_min_pu, net.bus(2).v_max_pu) == (None, None)
    assert (net.bus(3).v_min_pu, net.bus(3).v_max_pu) == (0.94, 1.06)


def test_slack_voltage_is_the_generators_setpoint_else_the_bus_voltage(tmp_path: Path) -> None:
    buses = "1 3 0 0 0 0 1 1.02 0 11 1 1.1 0.9;\n2 1 0.1 0 0 0 1 1 0 11 1 1.1 0.9;\n"
    buses += "3 1 0.1 0 0 0 1 1 0 11 1 1.1 0.9;\n"
    with_gen = _case(tmp_path, buses, "1 0 0 10 -10 1.03 10 1 10 0;\n", BRANCHES)
    assert load_matpower(with_gen).v_slack_pu == 1.03
    out_of_service = _case(tmp_path, buses, "1 0 0 10 -10 1.03 10 0 10 0;\n", BRANCHES)
    assert load_matpower(out_of_service).v_slack_pu == 1.02
    unsolved = _case(tmp_path, buses.replace("1.02", "0"), "1 0 0 10 -10 0 10 0 10 0;\n", BRANCHES)
    assert load_matpower(unsolved).v_slack_pu == 1.0


def test_generators_elsewhere_are_fixed_injections(tmp_path: Path) -> None:
    case = _case(
        tmp_path,
        "1 3 0 0 0 0 1 1 0 11 1 1.1 0.9;\n2 2 0.1 0 0 0 1 1 0 11 1 1.1 0.9;\n"
        "3 1 0.1 0 0 0 1 1 0 11 1 1.1 0.9;\n",
        "1 0 0 10 -10 1 10 1 10 0;\n1 0 0 10 -10 1.05 10 1 10 0;\n"
        "2 0.05 0.01 1 -1 1.01 10 1 1 0;\n3 0.5 0 1 -1 1 10 0 1 0;\n",
        BRANCHES,
    )
    net = load_matpower(case)
    assert net.v_slack_pu == 1.0  # the slack bus's first generator, not its second
    assert [(g.bus, g.p_kw, g.q_kvar) for g in net.generators] == [(2, 50.0, 10.0)]
    assert net.fixed_gen_kw == {2: 50.0}


def test_isolated_buses_are_left_out_with_their_branches(tmp_path: Path) -> None:
    case = _case(
        tmp_path,
        "1 3 0 0 0 0 1 1 0 11 1 1.1 0.9;\n2 1 0.1 0 0 0 1 1 0 11 1 1.1 0.9;\n"
        "3 1 0.1 0 0 0 1 1 0 11 1 1.1 0.9;\n4 4 0.3 0 0 0 1 1 0 11 1 1.1 0.9;\n",
        "1 0 0 10 -10 1 10 1 10 0;\n4 0.1 0 1 -1 1 10 1 1 0;\n",
        BRANCHES + "3 4 0.01 0.02 0 0 0 0 0 0 1 -360 360;\n",
    )
    net = load_matpower(case)
    assert net.bus_ids == (1, 2, 3)
    assert len(net.branches) == 2
    assert net.generators == ()


def test_shunts_charging_and_shift_are_read(tmp_path: Path) -> None:
    case = _case(
        tmp_path,
        "1 3 0 0 0 0 1 1 0 11 1 1.1 0.9;\n2 1 0.1 0 0.02 0.3 1 1 0 11 1 1.1 0.9;\n"
        "3 1 0.1 0 0 0 1 1 0 11 1 1.1 0.9;\n",
        "1 0 0 10 -10 1 10 1 10 0;\n",
        "1 2 0.01 0.02 0.004 0 0 0 0.98 30 1 -360 360;\n"
        "2 3 0.01 0.02 0.001 0 0 0 0 0 1 -360 360;\n",
    )
    net = load_matpower(case)
    assert (net.bus(2).gs_kw, net.bus(2).bs_kvar) == (20.0, 300.0)
    assert net.branch_to(2).b_pu == 0.004
    assert net.branch_to(2).shift_deg == 30.0
    assert net.has_shunts


def test_a_transformer_may_have_its_tap_downstream(tmp_path: Path) -> None:
    """MATPOWER puts the tap at the from bus; a converter may write the branch either way."""
    case = _case(
        tmp_path,
        "1 3 0 0 0 0 1 1 0 20 1 1.1 0.9;\n2 1 0.1 0 0 0 1 1 0 0.4 1 1.1 0.9;\n"
        "3 1 0.1 0 0 0 1 1 0 0.4 1 1.1 0.9;\n",
        "1 0 0 10 -10 1 10 1 10 0;\n",
        "2 1 0.01 0.05 0 0 0 0 1.025 0 1 -360 360;\n2 3 0.01 0.02 0 0 0 0 0 0 1 -360 360;\n",
    )
    net = load_matpower(case)
    assert net.parent[2] == 1
    assert net.branch_to(2).from_bus == 2


def test_write_matpower_round_trips_the_whole_model(tmp_path: Path) -> None:
    net = Network(
        name="rt",
        base_mva=10.0,
        slack_bus=1,
        buses=(
            Bus(id=1, p_load_kw=0.0, q_load_kvar=0.0, base_kv=11.0),
            Bus(id=2, p_load_kw=100.0, q_load_kvar=20.0, base_kv=11.0, gs_kw=5.0, bs_kvar=50.0),
            Bus(id=3, p_load_kw=80.0, q_load_kvar=10.0, base_kv=11.0, v_min_pu=0.95),
        ),
        branches=(
            Branch(from_bus=1, to_bus=2, r_pu=0.01, x_pu=0.02, b_pu=0.003, tap=0.98),
            Branch(from_bus=3, to_bus=2, r_pu=0.01, x_pu=0.02, shift_deg=-30.0),
        ),
        v_slack_pu=1.025,
        generators=(Generator(bus=3, p_kw=40.0, q_kvar=-5.0),),
    )
    path = tmp_path / "rt.m"
    write_matpower(net, path)
    back = load_matpower(path)
    assert back.buses == net.buses
    assert back.branches == net.branches
    assert back.generators == net.generators
    assert back.v_slack_pu == net.v_slack_pu
