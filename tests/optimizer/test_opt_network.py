"""The feeder model: MATPOWER import, inline tables, and validation errors that name the element."""

from __future__ import annotations

from pathlib import Path

import pytest

from optimizer import Branch, Bus, Network, NetworkError, load_matpower, network_from_tables


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
