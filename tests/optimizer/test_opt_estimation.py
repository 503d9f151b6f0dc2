"""State estimation (issue 13) graded against pandapower, not against the estimator's own model.

Each load bus of the feeder draws its own factor (0.3-1.7) of its nominal load; the estimator is
told only the time-of-day profile (its pseudo loads) and what the meters read, with accuracy
class noise (`tests.optimizer.estimation_scenarios`). Targets (issue 13): RMS bus-voltage error
<= 0.002 p.u. with meters at every load bus, <= 0.004 p.u. at half of them; the head meter
alone leaves the single-factor picture the issue measured (errors up to ~0.01 p.u.).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from optimizer import (
    Measurement,
    Network,
    StateEstimator,
    synthetic_feeder,
)
from optimizer.tree import tree
from optimizer.tree_smoother import TreeSmoother
from tests.optimizer.estimation_scenarios import Draw, Fault, draw, errors, readings

RMS_ALL_PU = 0.002
RMS_HALF_PU = 0.004
SEEDS = (0, 1)
STALE_UNNAMED = 25
"""The largest load, on the lateral from bus 3 next to the substation: frozen, its meter ties
with the head meter in the normalised residual test (the voltages there barely see it)."""


@functools.cache
def _draw(net: Network, seed: int, **kw: Any) -> Draw:
    """Each pandapower solve once per test process."""
    return draw(net, seed, **kw)


@pytest.fixture(scope="module")
def estimator(case33: Network) -> StateEstimator:
    return StateEstimator(case33)


@pytest.fixture(scope="module")
def evening(case33: Network) -> list[Draw]:
    return [_draw(case33, seed) for seed in SEEDS]


@pytest.fixture(scope="module")
def midday(case33: Network) -> list[Draw]:
    return [_draw(case33, seed, midday=True) for seed in SEEDS]


def _estimate(est: StateEstimator, d: Draw, ms: list[Measurement], **kw: float) -> object:
    return est.estimate(
        ms,
        pseudo_loads_kw=d.pseudo_kw,
        pseudo_loads_kvar=d.pseudo_kvar,
        injections_kw=d.injections_kw,
        **kw,
    )


def _coverage(d: Draw, seed: int, est: StateEstimator) -> Iterator[tuple[str, float, float]]:
    for name, buses in (
        ("all", d.load_buses),
        ("half", d.load_buses[::2]),
        ("head", []),
    ):
        result = est.estimate(
            readings(d, buses, np.random.default_rng(100 + seed)),
            pseudo_loads_kw=d.pseudo_kw,
            pseudo_loads_kvar=d.pseudo_kvar,
            injections_kw=d.injections_kw,
        )
        assert not result.dropped, f"{name}: honest meters dropped: {result.dropped}"
        yield (name, *errors(result, d))


@pytest.mark.parametrize("when", ["evening", "midday"])
def test_meters_bring_the_voltages_within_target(
    when: str, estimator: StateEstimator, evening: list[Draw], midday: list[Draw]
) -> None:
    """Meters at every load bus: RMS <= 0.002 p.u.; at every second one: <= 0.004 p.u.; the
    head meter alone is worse than both (midday: PV at every load bus, the feeder exporting)."""
    for seed, d in zip(SEEDS, evening if when == "evening" else midday, strict=True):
        if when == "midday":
            assert d.truth.import_kw < 0, "midday should export"
        figures = {name: (rms, worst) for name, rms, worst in _coverage(d, seed, estimator)}
        shown = ", ".join(f"{k} rms {r:.4f} max {m:.4f}" for k, (r, m) in figures.items())
        assert figures["all"][0] <= RMS_ALL_PU, shown
        assert figures["half"][0] <= RMS_HALF_PU, shown
        assert figures["head"][0] > max(figures["all"][0], figures["half"][0]), shown


def test_voltage_sigma_covers_the_error(estimator: StateEstimator, evening: list[Draw]) -> None:
    """The reported spread is honest: nearly every bus's error is within 3 v_sigma."""
    inside = total = 0
    for seed, d in zip(SEEDS, evening, strict=True):
        result = estimator.estimate(
            readings(d, d.load_buses[::2], np.random.default_rng(seed)),
            pseudo_loads_kw=d.pseudo_kw,
            pseudo_loads_kvar=d.pseudo_kvar,
        )
        for bus, v in d.truth.v_pu.items():
            total += 1
            inside += abs(result.v_pu[bus] - v) <= 3.0 * result.v_sigma_pu[bus] + 1e-9
    assert inside >= 0.95 * total, f"{inside} of {total} within 3 sigma"


@pytest.mark.parametrize("fault", ["sign", "ct", "stale"])
@pytest.mark.parametrize("bus", [12, 31])
def test_a_lying_meter_is_named_and_dropped(
    fault: Fault, bus: int, case33: Network, estimator: StateEstimator, evening: list[Draw]
) -> None:
    """Wrong sign, 2 x CT ratio, frozen at an earlier hour: the meter is named in `dropped`
    and the estimate stays within target. Buses 12 (main feeder) and 31 (the lateral from bus
    6): far enough from the substation that the voltages see where the error is."""
    for seed, d in zip(SEEDS[:2], evening, strict=False):
        stale = _draw(case33, 50 + seed, profile=0.4)
        ms = readings(
            d, d.load_buses, np.random.default_rng(7 + seed), faults={bus: fault}, stale=stale
        )
        result = estimator.estimate(
            ms, pseudo_loads_kw=d.pseudo_kw, pseudo_loads_kvar=d.pseudo_kvar
        )
        named = {(b.source, b.kind) for b in result.dropped}
        assert any(source == f"m{bus}" for source, _ in named), result.dropped
        assert all(b.normalized_residual > estimator.bad_data_threshold for b in result.dropped)
        assert result.n_measurements == len(ms) - len(result.dropped)
        rms, worst = errors(result, d)
        assert rms <= RMS_ALL_PU, f"rms {rms:.4f} max {worst:.4f}, dropped {result.dropped}"


@pytest.mark.parametrize("fault", ["sign", "ct", "stale"])
def test_no_single_lying_meter_breaks_the_target(
    fault: Fault, case33: Network, estimator: StateEstimator, evening: list[Draw]
) -> None:
    """Whichever load bus's meter lies, the estimate stays within target. (Near the substation,
    on the lateral from bus 2, a lie may go unnamed: it moves no voltage beyond the meters'
    noise, and so it does no harm either.)"""
    d = evening[0]
    stale = _draw(case33, 50, profile=0.4)
    for bus in d.load_buses:
        if fault == "stale" and bus == STALE_UNNAMED:
            continue  # test_a_frozen_meter_next_to_the_substation
        ms = readings(d, d.load_buses, np.random.default_rng(bus), faults={bus: fault}, stale=stale)
        result = estimator.estimate(
            ms, pseudo_loads_kw=d.pseudo_kw, pseudo_loads_kvar=d.pseudo_kvar
        )
        rms, worst = errors(result, d)
        assert rms <= RMS_ALL_PU, f"bus {bus}: rms {rms:.4f} max {worst:.4f} {result.dropped}"


@pytest.mark.xfail(reason="known limit: the LNR test drops the head's P for it", strict=True)
def test_a_frozen_meter_next_to_the_substation(
    case33: Network, estimator: StateEstimator, evening: list[Draw]
) -> None:
    """Bus 25's meter frozen at a lighter hour (a 440 kW error): its P and the head's P explain
    the mismatch equally well, the test drops the head's, and the error reaches ~0.003 p.u.
    Telling them apart needs more than one meter per source: dropping a meter's other
    measurements with its first bad one, or a second head measurement."""
    d = evening[0]
    stale = _draw(case33, 50, profile=0.4)
    ms = readings(
        d,
        d.load_buses,
        np.random.default_rng(STALE_UNNAMED),
        faults={STALE_UNNAMED: "stale"},
        stale=stale,
    )
    result = estimator.estimate(ms, pseudo_loads_kw=d.pseudo_kw, pseudo_loads_kvar=d.pseudo_kvar)
    assert errors(result, d)[0] <= RMS_ALL_PU, result.dropped


def test_max_drops_and_pseudo_measurements(estimator: StateEstimator, evening: list[Draw]) -> None:
    """No drop beyond `max_drops`; pseudo-measurements are not counted as measurements."""
    d = evening[0]
    faults: dict[int, Fault] = dict.fromkeys(d.load_buses[:8], "sign")
    ms = readings(d, d.load_buses, np.random.default_rng(3), faults=faults)
    strict = StateEstimator(d.net, max_drops=2)
    result = strict.estimate(ms, pseudo_loads_kw=d.pseudo_kw, pseudo_loads_kvar=d.pseudo_kvar)
    assert len(result.dropped) == 2
    assert result.n_measurements == len(ms) - 2
    none = StateEstimator(d.net, max_drops=0).estimate(
        ms, pseudo_loads_kw=d.pseudo_kw, pseudo_loads_kvar=d.pseudo_kvar
    )
    assert none.dropped == ()
    assert none.residual > result.residual > 0


def test_slack_voltage_from_the_head_meter(case33: Network, estimator: StateEstimator) -> None:
    """The busbar at 1.03 p.u. (a tap changer): not given, the estimate takes it from the head
    meter's V (and the other voltages); given, it is held."""
    d = _draw(case33, 4, v_slack_pu=1.03)
    ms = readings(d, d.load_buses[::2], np.random.default_rng(4))
    result = estimator.estimate(ms, pseudo_loads_kw=d.pseudo_kw, pseudo_loads_kvar=d.pseudo_kvar)
    assert result.v_pu[case33.slack_bus] == pytest.approx(1.03, abs=0.002)
    assert errors(result, d)[0] <= RMS_HALF_PU
    held = estimator.estimate(
        ms, pseudo_loads_kw=d.pseudo_kw, pseudo_loads_kvar=d.pseudo_kvar, v_slack_pu=1.03
    )
    assert held.v_pu[case33.slack_bus] == pytest.approx(1.03, abs=1e-12)
    assert errors(held, d)[0] <= RMS_HALF_PU
    head_only = [m for m in ms if m.source == "head"]
    alone = estimator.estimate(
        head_only, pseudo_loads_kw=d.pseudo_kw, pseudo_loads_kvar=d.pseudo_kvar
    )
    assert alone.v_pu[case33.slack_bus] == pytest.approx(1.03, abs=0.006)  # 3 sigma of 0.2 %


def test_synthetic_1000_bus_feeder() -> None:
    """A 1,000-bus feeder with a meter at every load bus: RMS within 0.002 p.u."""
    net = synthetic_feeder(1000, seed=3)
    d = draw(net, 11)
    result = StateEstimator(net).estimate(
        readings(d, d.load_buses, np.random.default_rng(11)),
        pseudo_loads_kw=d.pseudo_kw,
        pseudo_loads_kvar=d.pseudo_kvar,
    )
    rms, worst = errors(result, d)
    assert rms <= RMS_ALL_PU, f"rms {rms:.4f} max {worst:.4f}"
    assert len(result.loads_kw) == len(net.buses)
    assert len(result.v_sigma_pu) == len(net.buses)


def _meter(**kw: object) -> Measurement:
    fields: dict[str, object] = {"source": "m7", "kind": "p", "bus": 7, "value": 10.0, "sigma": 0.1}
    fields.update(kw)
    return Measurement(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("meter", "message"),
    [
        (_meter(bus=99), r"'p' from 'm7' at bus 99: network .* has no bus 99"),
        (_meter(value=math.nan), r"'p' from 'm7' at bus 7: value must be finite, got nan"),
        (_meter(value=math.inf), r"at bus 7: value must be finite, got inf"),
        (_meter(sigma=0.0), r"'p' from 'm7' at bus 7: sigma must be > 0, got 0.0"),
        (_meter(sigma=-1.0), r"sigma must be > 0, got -1.0"),
        (_meter(sigma=math.nan), r"sigma must be > 0, got nan"),
        (_meter(kind="v", value=0.0), r"'v' from 'm7' at bus 7: a voltage must be > 0 p.u."),
        (
            _meter(kind="head_p"),
            r"'head_p' from 'm7' at bus 7: a head measurement is at the slack bus 1",
        ),
        (
            _meter(kind="watts"),
            r"'watts' from 'm7' at bus 7: kind must be one of p, q, v, head_p, head_q",
        ),
    ],
)
def test_bad_input_is_one_clear_line(
    meter: Measurement, message: str, estimator: StateEstimator, evening: list[Draw]
) -> None:
    d = evening[0]
    with pytest.raises(ValueError, match=message):
        estimator.estimate(
            [_meter(source="ok", bus=8), meter],
            pseudo_loads_kw=d.pseudo_kw,
            pseudo_loads_kvar=d.pseudo_kvar,
        )


def test_bad_pseudo_injection_and_settings(estimator: StateEstimator, case33: Network) -> None:
    with pytest.raises(ValueError, match=r"pseudo_loads_kw: network .* has no bus 77"):
        estimator.estimate([], pseudo_loads_kw={77: 1.0}, pseudo_loads_kvar={})
    with pytest.raises(ValueError, match=r"pseudo_loads_kvar: bus 5: value must be finite"):
        estimator.estimate([], pseudo_loads_kw={}, pseudo_loads_kvar={5: math.nan})
    with pytest.raises(ValueError, match=r"injections_kw: network .* has no bus 0"):
        estimator.estimate([], pseudo_loads_kw={}, pseudo_loads_kvar={}, injections_kw={0: 1.0})
    with pytest.raises(ValueError, match=r"v_slack_pu must be within 0.5..1.5 p.u., got 2.0"):
        estimator.estimate([], pseudo_loads_kw={}, pseudo_loads_kvar={}, v_slack_pu=2.0)
    with pytest.raises(ValueError, match="pseudo_sigma_frac must be > 0"):
        StateEstimator(case33, pseudo_sigma_frac=0.0)
    empty = estimator.estimate([], pseudo_loads_kw={}, pseudo_loads_kvar={})
    assert empty.n_measurements == 0
    assert empty.v_pu[case33.slack_bus] == pytest.approx(case33.v_slack_pu)


def test_tree_passes_are_the_weighted_least_squares(case33: Network) -> None:
    """The two passes give exactly the dense WLS solution and covariance of the same linear
    model (random weights, offsets, slack free), to round-off."""
    m = tree(case33)
    n = len(m.ids)
    rng = np.random.default_rng(5)
    var_load = rng.uniform(1e-7, 1e-5, (n + 1, 2))
    mu_load = rng.uniform(0.0, 0.02, (n + 1, 2))
    alpha = np.where(rng.random(n + 1) < 0.5, rng.uniform(1e4, 1e5, n + 1), 0.0)
    alpha[n] += 1e3
    beta = alpha * rng.uniform(0.9, 1.0, n + 1)
    beta[n] += 1e3
    w_head, h_head = np.array([3e5, 2e5]), np.array([3e5 * 0.3, 2e5 * 0.2])
    lam, kap = rng.normal(0, 1e-3, (n + 1, 2)), rng.normal(0, 1e-4, n)
    smoother = TreeSmoother(m)
    gains = smoother.gains(var_load, alpha, w_head, fixed=False)
    load, u, _ = smoother.means(gains, mu_load, lam, kap, beta, h_head, None)
    # the same model, dense: x = (loads, u_slack), every quantity an affine function of x
    par = np.where(m.parent_pos < 0, n, m.parent_pos)
    below = np.eye(n + 1)
    for k in reversed(range(n)):  # positions are root first: children come later
        below[par[k]] += below[k]
    flow_of = np.kron(below, np.eye(2))  # flows from loads (the slack's: the import)
    u_of = np.zeros((n + 1, 2 * (n + 1) + 1))
    u_of[n, -1] = 1.0
    u_const = np.zeros(n + 1)
    flow_const = (below @ lam).ravel()
    for k in range(n):
        drop = -2.0 * (m.r[k] * flow_of[2 * k] + m.x[k] * flow_of[2 * k + 1])
        u_of[k] = u_of[par[k]] / m.tap[k] ** 2
        u_of[k, :-1] += drop
        u_const[k] = u_const[par[k]] / m.tap[k] ** 2 + kap[k]
        u_const[k] += -2.0 * (m.r[k] * flow_const[2 * k] + m.x[k] * flow_const[2 * k + 1])
    rows = [np.hstack([np.eye(2 * (n + 1)), np.zeros((2 * (n + 1), 1))]), u_of]
    rows.append(np.hstack([flow_of[2 * n : 2 * n + 2], np.zeros((2, 1))]))
    h = np.vstack(rows)
    z = np.concatenate(
        [mu_load.ravel(), np.divide(beta, alpha, out=np.zeros(n + 1), where=alpha > 0) - u_const]
    )
    z = np.concatenate([z, h_head / w_head - flow_const[2 * n : 2 * n + 2]])
    w = np.concatenate([1.0 / var_load.ravel(), alpha, w_head])
    g = h.T @ (w[:, None] * h)
    x = np.linalg.solve(g, h.T @ (w * z))
    cov = np.linalg.inv(g)
    np.testing.assert_allclose(load, x[:-1].reshape(n + 1, 2), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(u, u_of @ x + u_const, rtol=1e-12)
    np.testing.assert_allclose(
        gains.cov[:, 2, 2], np.einsum("ij,jk,ik->i", u_of, cov, u_of), rtol=1e-8
    )
    np.testing.assert_allclose(gains.var_load, np.diag(cov)[:-1].reshape(n + 1, 2), rtol=1e-8)
