"""The varied feeder, pure: loads bus by bus, model error, meter accuracy, clouds, AMI schedule.

Graded with pandapower (``FeederPhysics``), never with the controller's model.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

import numpy as np
import pytest

from hil.ami import AmiSchedule, AmiSettings
from hil.physics import FeederPhysics
from hil.variation import FeederVariation, RigVariation, hop_distances

SEEDS = (1, 2, 3, 4, 5)
EVENING_H = 19.0


@pytest.fixture(scope="module")
def case() -> FeederPhysics:
    """The 33-bus case as the controller reads it."""
    return FeederPhysics()


def _draw(case: FeederPhysics, spec: RigVariation) -> FeederVariation:
    return FeederVariation(
        spec, base_load_kw=case.base_bus_load_kw, branches=case.branches, head_bus=case.head_bus
    )


def _one_factor_error(truth_head_kw: float, truth_v: dict[int, float]) -> float:
    """The controller's old picture: the case's loads times the one factor that matches the
    head import (secant steps on the AC power flow, to 0.01 kW); its largest bus-voltage error
    (p.u.)."""
    est = FeederPhysics()

    def head(scale: float) -> float:
        est.load_scale = scale
        return est.solve().head_p_kw - truth_head_kw

    a, b = 0.9, 1.1
    fa, fb = head(a), head(b)
    while abs(fb) > 0.01:
        a, b, fa = b, b - fb * (b - a) / (fb - fa), fb
        fb = head(b)
    state = est.solve()
    return max(abs(truth_v[bus] - state.v_pu[bus]) for bus in truth_v)


def test_buses_differ_from_the_one_factor_picture(case: FeederPhysics) -> None:
    errors = []
    for seed in SEEDS:
        fv = _draw(case, RigVariation(seed=seed))
        truth = FeederPhysics()
        truth.set_bus_load_factors(fv.load_factors(t_s=3600.0, hour=EVENING_H, scale=1.0))
        state = truth.solve()
        errors.append(_one_factor_error(state.head_p_kw, state.v_pu))
    # the dispatch keeps a 2 mp.u. margin inside the band: the varied loads alone, model error
    # aside, move bus voltages by more than that in most draws
    assert statistics.median(errors) > 0.002, errors
    assert max(errors) > 0.003, errors
    assert min(errors) > 0.0005, errors


def test_the_feeder_total_follows_the_load_scale(case: FeederPhysics) -> None:
    base = case.base_load_kw
    weights = np.array([case.base_bus_load_kw[b] for b in sorted(case.base_bus_load_kw)]) / base
    for seed in SEEDS:
        quiet = _draw(case, RigVariation(seed=seed, noise_sigma=0.0))
        noisy = _draw(case, RigVariation(seed=seed))
        for hour, scale in ((3.0, 0.5), (12.0, 0.8), (EVENING_H, 1.1)):
            exact = sum(
                base_kw * quiet.load_factors(t_s=0.0, hour=hour, scale=scale)[b]
                for b, base_kw in case.base_bus_load_kw.items()
            )
            assert exact == pytest.approx(scale * base, rel=1e-12)
            # with noise, the total strays by the noise averaged over the buses: 4 sigma
            # of that average (the nominal errors are normalised away by the mean shape)
            factors = noisy.load_factors(t_s=7200.0 * seed, hour=hour, scale=scale)
            total = sum(base_kw * factors[b] for b, base_kw in case.base_bus_load_kw.items())
            nominal = np.array(list(noisy.nominal_error.values()))
            sigma_total = 0.05 * math.sqrt(float(((weights * nominal) ** 2).sum())) * 1.1
            assert total / (scale * base) == pytest.approx(1.0, abs=4.0 * sigma_total + 0.02)


def test_loads_are_a_function_of_seed_and_time(case: FeederPhysics) -> None:
    spec = RigVariation(seed=7)
    walked = _draw(case, spec)
    for t in range(0, 40_000, 600):  # a run that steps through time ...
        walked.load_factors(t_s=float(t), hour=12.0, scale=1.0)
    jumped = _draw(case, spec)  # ... and one that jumps straight to the end
    assert jumped.load_factors(t_s=39_930.0, hour=12.0, scale=1.0) == walked.load_factors(
        t_s=39_930.0, hour=12.0, scale=1.0
    )
    other = _draw(case, RigVariation(seed=8))
    assert other.load_factors(t_s=100.0, hour=12.0, scale=1.0) != jumped.load_factors(
        t_s=100.0, hour=12.0, scale=1.0
    )
    # AR(1): a minute apart the noise barely moves, hours apart it is independent
    a, b = walked.noise(10_000.0), walked.noise(10_060.0)
    far = walked.noise(30_000.0)
    assert np.abs(np.log(a) - np.log(b)).max() < np.abs(np.log(a) - np.log(far)).max()


def test_impedances_differ_from_the_case_by_the_spread_and_per_seed(case: FeederPhysics) -> None:
    spec = RigVariation(seed=3, impedance_spread=0.12)
    fv = _draw(case, spec)
    rig = FeederPhysics(impedance_factors=fv.impedance_factors)
    ratios = []
    for branch in case.branches:
        (r0, x0), (r1, x1) = case.impedance_ohm(branch), rig.impedance_ohm(branch)
        ratios += [r1 / r0, x1 / x0]
    assert all(0.88 - 1e-9 <= k <= 1.12 + 1e-9 for k in ratios)
    assert max(abs(k - 1.0) for k in ratios) > 0.10  # 64 uniform draws use the spread
    again = FeederPhysics(impedance_factors=_draw(case, spec).impedance_factors)
    assert all(again.impedance_ohm(b) == rig.impedance_ohm(b) for b in case.branches)
    other = _draw(case, dataclasses.replace(spec, seed=4)).impedance_factors
    assert other != fv.impedance_factors
    # the model error moves the voltages: same loads, the physics' own lines
    assert abs(rig.solve().v_min_pu - case.solve().v_min_pu) > 1e-4


def test_meters_read_within_their_class(case: FeederPhysics) -> None:
    fv = _draw(case, RigVariation(seed=2, meter_class_pct=0.5, meter_bias_frac=0.3))
    reads = [fv.read(5, t_s=t * 5.0, p_kw=100.0, q_kvar=40.0, v_ll_v=12_000.0) for t in range(400)]
    rel = np.array([r.p_kw / 100.0 - 1.0 for r in reads])
    bias_pq, _ = fv.meter_bias(5)
    assert abs(bias_pq) <= 0.3 * 0.005
    # class 0.5: sigma 0.25 % of reading around the bias
    assert rel.mean() == pytest.approx(bias_pq, abs=4 * 0.0025 / math.sqrt(len(rel)))
    assert rel.std() == pytest.approx(0.0025, rel=0.2)
    assert np.abs(rel).max() < 0.0015 + 4.5 * 0.0025
    assert fv.read(5, t_s=10.0, p_kw=100.0, q_kvar=40.0, v_ll_v=12_000.0) == reads[2]


def test_a_cloud_front_reaches_far_buses_later(case: FeederPhysics) -> None:
    fv = _draw(case, RigVariation(cloud_speed_m_s=10.0, span_m=300.0))
    hops = hop_distances(case.branches, case.head_bus)
    assert hops[1] == 0
    assert hops[18] == 17
    assert hops[7] == 6
    assert fv.cloud_delay_s(18) == pytest.approx(17 * 300.0 / 10.0)
    assert fv.cloud_delay_s(18) > fv.cloud_delay_s(7) > 0
    inward = _draw(case, RigVariation(cloud_direction_deg=180.0))
    assert inward.cloud_delay_s(18) < inward.cloud_delay_s(7) < 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"impedance_spread": 1.5}, "RigVariation.impedance_spread must be within 0..0.9"),
        ({"seed": -1}, "RigVariation.seed must be an integer >= 0"),
        ({"noise_tau_s": 0.0}, "RigVariation.noise_tau_s must be a number > 0"),
        ({"meter_class_pct": math.nan}, "RigVariation.meter_class_pct must be within"),
    ],
)
def test_a_bad_variation_names_its_field(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RigVariation(**kwargs)  # type: ignore[arg-type]


def test_ami_schedule_cadence_lateness_and_losses() -> None:
    settings = AmiSettings(seed=5, cadence_s=(15.0, 60.0), late_frac=0.3, missing_frac=0.2)
    names = [f"ami{b:02d}" for b in range(2, 34)]
    sched = AmiSchedule(names, settings)
    released = []
    for k in range(0, 3600, 5):
        t = float(k)
        for name in sched.due(t):
            sched.take(name, t, {"ts": t})
        released += sched.ready(t)
    assert all(15.0 <= sched.cadence_s(n) <= 60.0 for n in names)
    assert len({round(sched.cadence_s(n), 3) for n in names}) == len(names)
    # about 3600 / 37.5 readings per meter; 20 % lost and 30 % held back, within 5 sigma
    n = sched.taken
    assert n == pytest.approx(sum(3600.0 / sched.cadence_s(x) for x in names), rel=0.05)
    assert sched.missing / n == pytest.approx(0.2, abs=5 * math.sqrt(0.2 * 0.8 / n))
    assert sched.late / (n - sched.missing) == pytest.approx(0.3, abs=0.08)
    late = [p for p in released if p.publish_s > p.taken_s]
    assert late
    assert all(p.publish_s - p.taken_s <= 60.0 for p in late)
    for name in names:  # in order per meter, never before they were taken
        mine = [p for p in released if p.name == name]
        assert [p.taken_s for p in mine] == sorted(p.taken_s for p in mine)
