"""A feeder's flexibility from parametric solves of the kept LP (`optimizer.flexibility`).

The IEEE 33-bus feeder with a 1 MW battery near the head, a three-hour horizon of 5-minute
then 15-minute steps, the load rising over the first hour. Each figure the flex solves report is
checked by a dispatch of its own on a fresh `Dispatcher` (its own model, solved from scratch),
never by the kept model that produced it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import math

import numpy as np
import pandas as pd
import pytest

from optimizer import (
    BatteryUnit,
    Dispatcher,
    DispatchInput,
    DispatchResult,
    Forecast,
    HorizonSpec,
    Network,
)
from optimizer.flexibility import capped_input, flexibility, window_steps
from optimizer.lp import lp_numbers

SPEC = HorizonSpec.multi_resolution(300.0, hours=3.0, fine_steps=2, block_s=900.0)
BATTERY = BatteryUnit(
    name="b3",
    bus=3,
    p_max_kw=1000.0,
    energy_kwh=2000.0,
    soc_kwh=1000.0,
    soc_min_kwh=100.0,
    soc_max_kwh=1900.0,
)
NO_LIMIT = [math.nan] * SPEC.horizon


def _input(net: Network, *, scale: float = 1.0, soc_kwh: float = 1000.0) -> DispatchInput:
    starts = np.asarray(SPEC.starts_s)
    return DispatchInput.for_horizon(
        SPEC,
        loads_kw={b: scale * p for b, p in net.loads_kw.items()},
        loads_kvar={b: scale * q for b, q in net.loads_kvar.items()},
        batteries=(dataclasses.replace(BATTERY, soc_kwh=soc_kwh),),
        v_min_pu=0.85,
        forecast=Forecast(
            price=pd.Series(np.where(starts < 3600.0, 0.25, 0.10)),
            load=pd.Series(1.0 + 0.2 * np.sin(starts / 3600.0)),
        ),
    )


def _cap(inp: DispatchInput, cap_kw: float, base: list[float] = NO_LIMIT) -> DispatchInput:
    w = window_steps(inp, 3600.0)
    limits = np.asarray(base, dtype=float)
    limits[:w] = np.fmin(limits[:w], cap_kw)
    return capped_input(inp, limits)


def _fresh(net: Network, inp: DispatchInput) -> DispatchResult:
    res = Dispatcher(net, time_limit_s=30.0).solve(inp)
    assert res.status.has_setpoints, res.message
    return res


@pytest.fixture(scope="module")
def solved(case33: Network) -> tuple[Dispatcher, DispatchInput, DispatchResult]:
    d = Dispatcher(case33, time_limit_s=30.0)
    inp = _input(case33)
    res = d.solve(inp)
    assert res.status.has_setpoints, res.message
    return d, inp, res


def test_window_is_the_steps_that_begin_within_the_hour() -> None:
    inp = DispatchInput.for_horizon(SPEC, loads_kw={}, loads_kvar={})
    starts = SPEC.starts_s
    assert window_steps(inp, 3600.0) == sum(1 for s in starts if s < 3600.0) == 6
    assert window_steps(inp, 1e6) == SPEC.horizon  # a plan shorter than the window: all of it
    assert window_steps(inp, 1.0) == 1


def test_min_kw_is_held_and_a_cap_below_it_is_not(
    case33: Network, solved: tuple[Dispatcher, DispatchInput, DispatchResult]
) -> None:
    """Holding exactly `min_kw` at every window step leaves no import slack (a dispatch of its
    own says so); a cap two resolutions below cannot be held; `max_kw` is the plan's peak."""
    d, inp, res = solved
    flex = d.flexibility(inp, NO_LIMIT, budget_s=30.0)
    assert flex.complete, flex.reason
    assert flex.min_kw is not None
    assert flex.max_kw is not None
    w = flex.window_steps
    assert flex.max_kw == pytest.approx(max(res.import_plan_kw[:w]), abs=1e-3)
    assert flex.min_kw < flex.max_kw - 100.0  # a 1 MW battery moves the peak by hundreds of kW
    at_min = _fresh(case33, _cap(inp, flex.min_kw))
    assert max(at_min.import_slack_plan_kw[:w]) <= inp.slack_tol_kw
    assert max(at_min.import_plan_kw[:w]) <= flex.min_kw + inp.slack_tol_kw
    resolution = max(1.0, 1e-3 * flex.max_kw)
    below = _fresh(case33, _cap(inp, flex.min_kw - 2.0 * resolution))
    assert max(below.import_slack_plan_kw[:w]) > inp.slack_tol_kw


def test_the_curve_is_convex_non_increasing_and_free_at_max_kw(
    case33: Network, solved: tuple[Dispatcher, DispatchInput, DispatchResult]
) -> None:
    """`points` points from `min_kw` to `max_kw`; each cost is the objective of a dispatch
    held at that cap less the free one's (checked on a fresh model)."""
    d, inp, res = solved
    flex = d.flexibility(inp, NO_LIMIT, budget_s=30.0, points=5)
    curve = flex.curve
    assert len(curve) == 5
    assert curve[0][0] == flex.min_kw
    assert curve[-1] == (flex.max_kw, 0.0)
    kws = [k for k, _ in curve]
    costs = [c for _, c in curve]
    assert kws == sorted(kws)
    assert len(set(kws)) == len(kws)
    assert all(a >= b for a, b in itertools.pairwise(costs))
    assert costs[0] > 0.0  # holding the lowest cap costs something
    slopes = [(c1 - c0) / (k1 - k0) for (k0, c0), (k1, c1) in itertools.pairwise(curve)]
    scale = max(abs(s) for s in slopes)
    assert all(a <= b + 1e-6 * scale for a, b in itertools.pairwise(slopes))  # convex
    for kw, cost in curve[1:-1]:
        held = _fresh(case33, _cap(inp, kw))
        assert cost == pytest.approx(held.objective - res.objective, rel=1e-4, abs=1e-6)


def test_a_limit_that_holds_anyway_bounds_max_kw(
    case33: Network, solved: tuple[Dispatcher, DispatchInput, DispatchResult]
) -> None:
    """An event's limit below the free peak over the window (one not the coordinator's):
    `max_kw` is what the feeder draws under it, never above it."""
    d, inp, res = solved
    w = window_steps(inp, 3600.0)
    limit = max(res.import_plan_kw[:w]) - 200.0
    base = [limit] * SPEC.horizon
    flex = d.flexibility(inp, base, budget_s=30.0)
    assert flex.max_kw is not None
    assert flex.min_kw is not None
    assert flex.max_kw <= limit + inp.slack_tol_kw
    assert flex.min_kw <= flex.max_kw
    held = _fresh(case33, capped_input(inp, base))
    assert flex.max_kw == pytest.approx(max(held.import_plan_kw[:w]), abs=0.5)


def test_a_dispatch_after_flex_solves_equals_one_without(case33: Network) -> None:
    """Two dispatchers see the same three intervals; one runs the flex solves after each.
    The next interval's dispatch is the same on both (setpoints, plan, objective)."""
    plain = Dispatcher(case33, time_limit_s=30.0)
    flexed = Dispatcher(case33, time_limit_s=30.0)
    for n, (scale, soc) in enumerate([(1.0, 1000.0), (1.05, 950.0), (0.9, 990.0)]):
        inp = _input(case33, scale=scale, soc_kwh=soc)
        a, b = plain.solve(inp), flexed.solve(inp)
        assert a.status.has_setpoints
        assert b.status.has_setpoints
        assert b.battery_kw["b3"] == pytest.approx(a.battery_kw["b3"], abs=1e-6), n
        assert b.objective == pytest.approx(a.objective, rel=1e-9), n
        np.testing.assert_allclose(b.import_plan_kw, a.import_plan_kw, atol=1e-6)
        flex = flexed.flexibility(inp, NO_LIMIT, budget_s=30.0)
        assert flex.available, flex.reason
    assert flexed.builds == plain.builds == 1  # the kept model, never rebuilt


def test_the_budget_bounds_the_work_and_what_was_found_holds(
    case33: Network, solved: tuple[Dispatcher, DispatchInput, DispatchResult]
) -> None:
    """A timer on which every reading is a second later: with a budget of 4 s only a few
    solves start. The `min_kw` found by then is one the feeder holds; with none left
    before the first, nothing is reported."""
    d, inp, _ = solved
    ticks = itertools.count()
    flex = d.flexibility(inp, NO_LIMIT, budget_s=4.0, timer=lambda: float(next(ticks)))
    assert not flex.complete
    assert "budget" in flex.reason
    assert 1 <= flex.solves <= 4
    assert flex.min_kw is not None
    assert flex.max_kw is not None
    w = flex.window_steps
    held = _fresh(case33, _cap(inp, flex.min_kw))
    assert max(held.import_slack_plan_kw[:w]) <= inp.slack_tol_kw
    assert flex.curve[-1] == (flex.max_kw, 0.0)
    none = d.flexibility(inp, NO_LIMIT, budget_s=0.0)
    assert not none.available
    assert none.solves == 0
    assert none.curve == ()


def test_nothing_to_offer_without_the_kept_solve(case33: Network) -> None:
    """Flexibility is that of the input the kept model last solved; another one (or a
    dispatcher that has not solved, or solves with CBC) gets a reason, not figures."""
    d = Dispatcher(case33, time_limit_s=30.0)
    inp = _input(case33)
    assert d.flexibility(inp, NO_LIMIT).reason == "not the last input solved"
    d.solve(inp)
    other = _input(case33, scale=0.9)
    assert not d.flexibility(other, NO_LIMIT).available
    cbc = Dispatcher(case33, time_limit_s=30.0, solver="cbc")
    cbc.solve(inp)
    assert not cbc.flexibility(inp, NO_LIMIT).available


def test_a_cap_moves_nothing_in_the_lp_but_the_import_limit_rows(
    case33: Network, solved: tuple[Dispatcher, DispatchInput, DispatchResult]
) -> None:
    """What lets the flex solves change only the `implim` rows' bounds of the kept model: the
    LP of a capped input differs from the dispatched one there alone."""
    d, inp, _ = solved
    assert d.last_points is not None
    a = lp_numbers(case33, inp, d.last_points)
    b = lp_numbers(case33, _cap(inp, 1500.0), d.last_points)
    changed = {
        name
        for name in a.rhs
        if not np.array_equal(np.asarray(a.rhs[name]), np.asarray(b.rhs[name]))
    }
    assert changed == {"implim"}
    for field in dataclasses.fields(a):
        if field.name == "rhs":
            continue
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, dict):
            assert x.keys() == y.keys()
            assert all(np.array_equal(np.asarray(x[k]), np.asarray(y[k])) for k in x), field.name
        else:
            assert np.array_equal(np.asarray(x), np.asarray(y)), field.name


def test_a_dispatch_due_stops_the_flex_solves_and_is_not_disturbed(case33: Network) -> None:
    """The flex solves on one thread, the next interval's dispatch on another, as in the
    daemon: the dispatch waits for the solve under way at most, the flex stops with what it
    had, and the dispatch equals that of a dispatcher that never ran flex solves."""
    plain = Dispatcher(case33, time_limit_s=30.0)
    flexed = Dispatcher(case33, time_limit_s=30.0)
    first, second = _input(case33), _input(case33, scale=1.05, soc_kwh=950.0)
    plain.solve(first)
    flexed.solve(first)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        job = pool.submit(flexed.flexibility, first, NO_LIMIT, budget_s=30.0)
        b = flexed.solve(second)
        flex = job.result()
    a = plain.solve(second)
    assert b.battery_kw["b3"] == pytest.approx(a.battery_kw["b3"], abs=1e-6)
    assert b.objective == pytest.approx(a.objective, rel=1e-9)
    if not flex.complete:  # the dispatch came first or midway
        assert flex.reason in ("a dispatch is due", "not the last input solved")
    # and the stop itself, deterministically: asked after the second solve
    flexed.solve(first)
    calls = itertools.count()
    assert flexed.session is not None
    stopped = flexibility(
        flexed.session, case33, first, NO_LIMIT, budget_s=30.0, stop=lambda: next(calls) >= 2
    )
    assert stopped.solves == 2
    assert stopped.reason == "a dispatch is due"
    assert stopped.max_kw is not None
