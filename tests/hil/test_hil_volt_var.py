"""The simulated inverter's volt-var curve (126 on the 123 chain, 705 on the 704 chain): the
pure curve evaluation, and the register semantics a client meets (enable, adoption, the
read-only active curve)."""

from __future__ import annotations

import pytest

from devices.sunspec import Value, encode_point, layout
from hil.sim_devices import SimInverter
from hil.volt_var import REPEATS, SCALE_FACTORS, curve_points, q_pct_at

POINTS = [(0.92, 44.0), (0.98, 0.0), (1.02, 0.0), (1.08, -44.0)]


@pytest.mark.parametrize(
    ("v_pu", "q_pct"),
    [
        (0.80, 44.0),  # flat below the first point
        (0.92, 44.0),
        (0.95, 22.0),  # half-way down 0.92..0.98
        (1.00, 0.0),  # dead band
        (1.05, -22.0),
        (1.08, -44.0),
        (1.20, -44.0),  # flat above the last point
    ],
)
def test_the_curve_is_linear_between_points_and_flat_beyond(v_pu: float, q_pct: float) -> None:
    assert q_pct_at(POINTS, v_pu) == pytest.approx(q_pct, abs=1e-9)


def _flat(points: list[tuple[float, float]] | None) -> list[float]:
    assert points is not None, "no usable curve"
    return [x for point in points for x in point]


def _write(sim: SimInverter, model_id: int, values: dict[str, Value]) -> bool:
    """Write points one by one as a Modbus client would; ``False`` at the first refusal."""
    model = layout(model_id, REPEATS[model_id])
    for name, value in values.items():
        pt = model.point(name)
        sf = SCALE_FACTORS[model_id].get(pt.sf, 0) if isinstance(pt.sf, str) else 0
        if not sim.apply_write(sim.point_address(model_id, name), encode_point(pt, value, sf)):
            return False
    return True


def test_volt_var_is_an_option_and_the_default_chains_are_unchanged() -> None:
    assert SimInverter("a", 2, 100.0).model_ids == (1, 103, 120, 123)
    assert SimInverter("b", 2, 100.0, control_model=704).model_ids == (1, 701, 702, 704)
    assert SimInverter("c", 2, 100.0, volt_var=True).model_ids == (1, 103, 120, 123, 126)
    with_705 = SimInverter("d", 2, 100.0, control_model=704, volt_var=True)
    assert with_705.model_ids == (1, 701, 702, 704, 705)
    assert with_705.values(705)["L"] == 13 + 2 * (10 + 2 * 4)  # NCrv 2, NPt 4


def test_the_factory_curve_acts_once_126_is_enabled() -> None:
    sim = SimInverter("pv", 2, 150.0, available_kw=100.0, volt_var=True)
    sim.update(v_pu=1.05)
    assert sim._volt_var_q_kvar() is None  # shipped disabled
    assert _write(sim, 126, {"ModEna": 1})
    # the IEEE 1547 category B curve: -22 % of 150 kW at 1.05 p.u.
    assert sim._volt_var_q_kvar() == pytest.approx(-33.0, abs=1e-9)
    sim.update(v_pu=0.90)
    assert sim._volt_var_q_kvar() == pytest.approx(66.0, abs=1e-9)


def test_126_refuses_to_enable_a_curve_whose_voltages_do_not_increase() -> None:
    sim = SimInverter("pv", 2, 150.0, volt_var=True)
    assert _write(sim, 126, {"curve[0].V3": 97.0})  # points may be written in any order ...
    assert not _write(sim, 126, {"ModEna": 1})  # ... but the curve is not enabled like this
    assert sim.values(126)["ModEna"] == 0
    assert not _write(sim, 126, {"curve[0].DeptRef": 3})  # only % of WMax is simulated


def test_705_changes_its_curve_only_by_adoption() -> None:
    sim = SimInverter("pv", 2, 100.0, control_model=704, volt_var=True)
    assert not _write(sim, 705, {"Crv[0].Pt[0].V": 90.0})  # the active curve is read-only
    bad = {"Crv[1].Pt[1].V": 91.0}  # below Pt[0]'s 92 %: not a curve
    assert _write(sim, 705, bad)
    assert _write(sim, 705, {"AdptCrvReq": 2})
    values = sim.values(705)
    assert values["AdptCrvRslt"] == 2  # FAILED
    assert _flat(curve_points(705, values)) == pytest.approx(_flat(POINTS))  # active: unchanged
    assert _write(sim, 705, {"Crv[1].Pt[1].V": 99.0, "Crv[1].Pt[0].Var": 30.0})
    assert _write(sim, 705, {"AdptCrvReq": 2, "Ena": 1})
    values = sim.values(705)
    assert values["AdptCrvRslt"] == 1  # COMPLETED
    adopted = [(0.92, 30.0), (0.99, 0.0), (1.02, 0.0), (1.08, -44.0)]
    assert _flat(curve_points(705, values)) == pytest.approx(_flat(adopted))
    sim.update(v_pu=0.92)
    assert sim._volt_var_q_kvar() == pytest.approx(30.0, abs=1e-9)
