"""The allocation LP: small cases checked by hand, properties over random fleets, and the size
the coordinator is built for (1,000 feeders; its speed is measured by
``benchmarks/fleet_allocation.py``, not asserted here)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.allocation import (
    AllocationStatus,
    Constraint,
    FeederInput,
    Mode,
    allocate,
    convex_hull,
)

KW = 1e-4
"""kW: the solver's tolerances, scaled to these sizes."""


def linear(site: str, lo: float, hi: float, slope: float) -> FeederInput:
    """A feeder whose cost is ``slope`` per kW below ``hi``."""
    return FeederInput(site=site, min_kw=lo, max_kw=hi, curve=((lo, slope * (hi - lo)), (hi, 0.0)))


def test_the_cheaper_feeder_reduces_first() -> None:
    a, b = linear("a", 0, 100, 1.0), linear("b", 0, 100, 3.0)
    out = allocate([a, b], [Constraint(name="t", sites=("a", "b"), limit_kw=150)])
    assert out.status is AllocationStatus.OPTIMAL
    assert out.limits["a"] == pytest.approx(50, abs=KW)
    assert out.limits["b"] is None  # left at its max_kw: not asked
    assert out.shortfall_kw["t"] == pytest.approx(0, abs=KW)
    assert out.cost == pytest.approx(50.0, abs=1e-3)
    # past the cheaper one's range the dearer one follows
    out = allocate([a, b], [Constraint(name="t", sites=("a", "b"), limit_kw=60)])
    assert out.limits["a"] == pytest.approx(0, abs=KW)
    assert out.limits["b"] == pytest.approx(60, abs=KW)


def test_a_convex_curve_reduces_its_cheap_end_first() -> None:
    # 10 kW cost 1 each, the next 10 kW cost 5 each; feeder b costs 2 throughout
    a = FeederInput(site="a", min_kw=0, max_kw=20, curve=((0, 60.0), (10, 10.0), (20, 0.0)))
    b = linear("b", 0, 20, 2.0)
    out = allocate([a, b], [Constraint(name="t", sites=("a", "b"), limit_kw=25)])
    # 15 kW to shed: a's first 10 (cost 1), then 5 of b (cost 2), not a's dear half
    assert out.kw["a"] == pytest.approx(10, abs=KW)
    assert out.kw["b"] == pytest.approx(15, abs=KW)


def test_a_non_convex_curve_is_taken_by_its_hull() -> None:
    points = ((0.0, 100.0), (10.0, 80.0), (20.0, 0.0))  # the middle point lies above the chord
    assert convex_hull(points) == ((0.0, 100.0), (20.0, 0.0))
    assert convex_hull(((0.0, 9.0), (1.0, 4.0), (2.0, 1.0), (3.0, 0.0))) == (
        (0.0, 9.0),
        (1.0, 4.0),
        (2.0, 1.0),
        (3.0, 0.0),
    )


def test_fair_mode_reduces_in_proportion_to_flexibility() -> None:
    feeders = [linear("a", 100, 300, 1.0), linear("b", 500, 600, 9.0), linear("c", 0, 50, 0.1)]
    # 950 kW at max; 760 asked: 190 kW to shed over 350 kW of flexibility
    out = allocate(
        feeders, [Constraint(name="t", sites=("a", "b", "c"), limit_kw=760)], mode=Mode.FAIR
    )
    share = 190 / 350
    assert out.share == pytest.approx(share, abs=1e-6)
    assert out.kw["a"] == pytest.approx(300 - share * 200, abs=KW)
    assert out.kw["b"] == pytest.approx(600 - share * 100, abs=KW)
    assert out.kw["c"] == pytest.approx(50 - share * 50, abs=KW)


def test_a_transformer_binds_tighter_than_the_target() -> None:
    # a and b on T1 (rated 150); c alone; the target (250 of 300) is loose for T1's pair
    feeders = [linear("a", 0, 100, 1.0), linear("b", 0, 100, 1.0), linear("c", 0, 100, 0.5)]
    out = allocate(
        feeders,
        [
            Constraint(name="t", sites=("a", "b", "c"), limit_kw=250),
            Constraint(name="T1", sites=("a", "b"), limit_kw=150),
        ],
    )
    assert out.kw["a"] + out.kw["b"] == pytest.approx(150, abs=KW)
    # T1's 50 kW already meets the target's 50: the cheaper c is not asked
    assert out.limits["c"] is None
    assert sum(out.kw.values()) <= 250 + KW


def test_a_fixed_feeder_counts_at_its_import_and_shifts_the_others() -> None:
    free = [linear("a", 0, 100, 1.0), linear("b", 0, 100, 2.0)]
    con = [Constraint(name="t", sites=("a", "b", "x"), limit_kw=220)]
    light = allocate([*free, FeederInput(site="x", fixed_kw=50)], con)
    heavy = allocate([*free, FeederInput(site="x", fixed_kw=90)], con)
    assert light.limits["x"] is None
    assert heavy.limits["x"] is None
    assert light.kw["x"] == 50
    assert heavy.kw["x"] == 90
    assert light.kw["a"] + light.kw["b"] == pytest.approx(170, abs=KW)
    assert heavy.kw["a"] + heavy.kw["b"] == pytest.approx(130, abs=KW)
    assert heavy.kw["a"] == pytest.approx(30, abs=KW)  # a is cheaper: it gives the 40 more


@pytest.mark.parametrize("mode", list(Mode))
def test_an_impossible_target_asks_everything_and_reports_the_exact_shortfall(mode: Mode) -> None:
    feeders = [
        linear("a", 40, 100, 1.0),
        linear("b", 70, 100, 2.0),
        FeederInput(site="x", fixed_kw=25),
    ]
    out = allocate(feeders, [Constraint(name="t", sites=("a", "b", "x"), limit_kw=100)], mode=mode)
    assert out.limits["a"] == pytest.approx(40, abs=KW)
    assert out.limits["b"] == pytest.approx(70, abs=KW)
    assert out.shortfall_kw["t"] == pytest.approx(40 + 70 + 25 - 100, abs=KW)


def test_no_constraint_asks_nothing() -> None:
    out = allocate([linear("a", 0, 100, 1.0)], [])
    assert out.limits == {"a": None}
    assert out.cost == 0.0


# -- properties ---------------------------------------------------------------------------


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[FeederInput], list[Constraint]]:
    n = draw(st.integers(1, 8))
    feeders: list[FeederInput] = []
    for i in range(n):
        if draw(st.booleans()) and draw(st.booleans()):
            feeders.append(FeederInput(site=f"f{i}", fixed_kw=draw(st.floats(0, 500))))
            continue
        lo = draw(st.floats(0, 500))
        width = draw(st.floats(1, 500))
        k = draw(st.integers(1, 4))
        slopes = sorted(draw(st.lists(st.floats(0, 10), min_size=k, max_size=k)), reverse=True)
        points = [(lo + width, 0.0)]
        for j, s in enumerate(slopes):  # from max_kw down: steeper further down (convex)
            kw = lo + width * (k - j - 1) / k
            points.append((kw, points[-1][1] + s * width / k))
        feeders.append(
            FeederInput(site=f"f{i}", min_kw=lo, max_kw=lo + width, curve=tuple(reversed(points)))
        )
    sites = [f.site for f in feeders]
    constraints = []
    for c in range(draw(st.integers(1, 3))):
        members = draw(st.lists(st.sampled_from(sites), min_size=1, unique=True))
        constraints.append(
            Constraint(name=f"c{c}", sites=tuple(members), limit_kw=draw(st.floats(0, 3000)))
        )
    return feeders, constraints


@settings(max_examples=150, deadline=None)
@given(fleets(), st.sampled_from(list(Mode)))
def test_limits_stay_in_range_and_constraints_hold_or_report_their_shortfall(
    fleet: tuple[list[FeederInput], list[Constraint]], mode: Mode
) -> None:
    feeders, constraints = fleet
    out = allocate(feeders, constraints, mode=mode)
    assert out.status is AllocationStatus.OPTIMAL
    for f in feeders:
        if f.fixed:
            assert out.limits[f.site] is None
            assert out.kw[f.site] == f.fixed_kw
        else:
            assert f.min_kw - KW <= out.kw[f.site] <= f.max_kw + KW
            limit = out.limits[f.site]
            assert limit is None or limit == out.kw[f.site]
    for c in constraints:
        total = sum(out.kw[s] for s in c.sites)
        # met, or missed by exactly the shortfall reported
        assert total <= c.limit_kw + out.shortfall_kw[c.name] + 1e-3
        floor = sum(f.fixed_kw if f.fixed else f.min_kw for f in feeders if f.site in c.sites)
        if out.shortfall_kw[c.name] > 1e-3:
            assert total == pytest.approx(c.limit_kw + out.shortfall_kw[c.name], abs=1e-3)
        # no shortfall beyond what the feeders' floors force
        assert out.shortfall_kw[c.name] <= max(0.0, floor - c.limit_kw) + 1e-3


@settings(max_examples=150, deadline=None)
@given(fleets())
def test_cost_mode_costs_no_more_than_the_proportional_split(
    fleet: tuple[list[FeederInput], list[Constraint]],
) -> None:
    feeders, constraints = fleet
    flexible = [f for f in feeders if not f.fixed]
    if not flexible:
        return
    target = Constraint(
        name="t", sites=tuple(f.site for f in feeders), limit_kw=constraints[0].limit_kw
    )
    fixed = sum(f.fixed_kw or 0.0 for f in feeders if f.fixed)
    top = sum(f.max_kw for f in flexible)
    span = sum(f.max_kw - f.min_kw for f in flexible)
    share = min(1.0, max(0.0, (top + fixed - target.limit_kw) / span)) if span else 0.0

    def cost_at(f: FeederInput, kw: float) -> float:
        hull = convex_hull(f.curve)
        return float(np.interp(kw, [p[0] for p in hull], [p[1] for p in hull]))

    proportional = sum(cost_at(f, f.max_kw - share * (f.max_kw - f.min_kw)) for f in flexible)
    out = allocate(feeders, [target], mode=Mode.COST)
    assert out.cost <= proportional + 1e-6 * (1 + proportional) + 1e-4


def test_a_fleet_of_a_thousand_feeders_with_four_points_each_solves() -> None:
    rng = np.random.default_rng(17)
    feeders = []
    for i in range(1000):
        lo = float(rng.uniform(500, 5000))
        hi = lo + float(rng.uniform(50, 1500))
        kws = np.linspace(lo, hi, 4)
        slopes = np.sort(rng.uniform(0.01, 2.0, 3))[::-1]  # steeper at the low end: convex
        costs = np.concatenate([np.cumsum((slopes * np.diff(kws))[::-1])[::-1], [0.0]])
        feeders.append(
            FeederInput(
                site=f"f{i}", min_kw=lo, max_kw=hi, curve=tuple(zip(kws, costs, strict=True))
            )
        )
    top = sum(f.max_kw for f in feeders)
    span = sum(f.max_kw - f.min_kw for f in feeders)
    halves = (tuple(f.site for f in feeders[:500]), tuple(f.site for f in feeders[500:]))
    constraints = [
        Constraint(name="all", sites=halves[0] + halves[1], limit_kw=top - 0.4 * span),
        Constraint(name="T1", sites=halves[0][:100], limit_kw=1e5),
    ]
    for mode in Mode:
        out = allocate(feeders, constraints, mode=mode)
        assert out.status is AllocationStatus.OPTIMAL
        assert out.shortfall_kw["all"] == pytest.approx(0, abs=1e-3)
        assert sum(out.kw.values()) == pytest.approx(top - 0.4 * span, abs=1e-2)
