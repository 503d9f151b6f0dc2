"""Per-load shed costs: the dispatch sheds the cheaper load first, and the fallback sees loads."""

from __future__ import annotations

import pytest

from optimizer import (
    Dispatcher,
    DispatchInput,
    DispatchStatus,
    FlexibleLoad,
    Network,
    proportional_curtailment,
)


def _input(
    network: Network, *, import_limit_kw: float | None, costs: tuple[float, float]
) -> DispatchInput:
    return DispatchInput(
        loads_kw=network.loads_kw,
        loads_kvar=network.loads_kvar,
        flexible_loads=(
            FlexibleLoad(
                name="a", bus=18, p_nominal_kw=200.0, p_min_kw=20.0, shed_cost_per_kwh=costs[0]
            ),
            FlexibleLoad(
                name="b", bus=33, p_nominal_kw=200.0, p_min_kw=20.0, shed_cost_per_kwh=costs[1]
            ),
        ),
        interval_s=60.0,
        import_limit_kw=import_limit_kw,
        v_min_pu=0.85,
    )


def test_the_cheaper_load_is_shed_first(case33: Network) -> None:
    free = Dispatcher(case33, time_limit_s=60.0).solve(
        _input(case33, import_limit_kw=None, costs=(0.5, 0.5))
    )
    assert free.status is DispatchStatus.OPTIMAL
    assert free.load_kw == {"a": pytest.approx(200.0), "b": pytest.approx(200.0)}
    limit = free.import_kw - 150.0
    for costs, cheap, dear in (((0.3, 2.0), "a", "b"), ((2.0, 0.3), "b", "a")):
        res = Dispatcher(case33, time_limit_s=60.0).solve(
            _input(case33, import_limit_kw=limit, costs=costs)
        )
        assert res.status is DispatchStatus.OPTIMAL, res.message
        assert res.import_kw <= limit + 1e-3
        assert res.load_kw[dear] == pytest.approx(200.0, abs=1e-3)
        assert 20.0 <= res.load_kw[cheap] < 200.0 - 100.0


def test_a_negative_shed_cost_is_refused() -> None:
    with pytest.raises(ValueError, match="shed_cost_per_kwh must be >= 0"):
        FlexibleLoad(name="a", bus=2, p_nominal_kw=10.0, shed_cost_per_kwh=-1.0)


def test_the_fallback_counts_loads_at_their_last_setpoint(case33: Network) -> None:
    inp = _input(case33, import_limit_kw=None, costs=(0.5, 0.5))
    res = proportional_curtailment(case33, inp)
    without = proportional_curtailment(
        case33, DispatchInput(loads_kw=case33.loads_kw, loads_kvar=case33.loads_kvar)
    )
    assert res.import_kw - without.import_kw > 400.0
    assert res.load_kw == {}  # the rule gives loads no setpoint
