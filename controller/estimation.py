"""State estimation each interval: what the meters measure, weighed by accuracy and age.

The meters along the feeder (``kind = "meter"`` with a ``bus`` and no ``head``) measure their
bus's customers' load (P, Q; consumption positive; the controlled DERs at the bus are not in it)
and the bus voltage; the head meter measures the import into the feeder. ``measurements``
turns one interval's readings into ``optimizer.Measurement`` records, each with the sigma of
its meter's accuracy class widened by its age (``Sigma``); ``BusEstimator`` hands them, with
the case's loads shaped by the head meter as pseudo-measurements where no meter is and the
DERs' own outputs as known injections, to ``optimizer.StateEstimator`` (weighted least squares
on the linearised feeder, the largest normalised residual dropped as bad data), and keeps the
metrics and the log: a meter dropped as bad data is named once when its episode begins, and
once when it ends, never every interval; the interval goes on with the rest.

The pure math lives in ``optimizer.estimation``; reading meters, sigmas and logs live here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from controller.metrics import Metrics
from devices import MeterReading

if TYPE_CHECKING:
    from controller.config import Config
    from optimizer import BadMeasurement, Measurement, Network, StateEstimate

__all__ = [
    "V_PLAUSIBLE_PU",
    "BusEstimator",
    "EstimateSummary",
    "Sigma",
    "measurements",
]

log = structlog.get_logger("feederd")

V_PLAUSIBLE_PU = (0.8, 1.2)
"""A meter's voltage outside this band (p.u. of its bus's base) is not a feeder's: a wrong
scale or base kV, or a fault. It is left out of the estimate (and counted as a bad reading)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Sigma:
    """A meter's measurement error as a standard deviation: its accuracy class (% of the
    reading, never below ``floor_kw`` for P and Q), widened in quadrature by what the measured
    quantity drifts per minute of the reading's age."""

    accuracy_pct: float
    v_accuracy_pct: float
    floor_kw: float
    age_pq_pct_per_min: float
    age_v_pct_per_min: float

    def pq(self, value: float, age_s: float) -> float:
        size = max(abs(value), self.floor_kw)
        drift = self.age_pq_pct_per_min / 100.0 * size * max(age_s, 0.0) / 60.0
        return math.hypot(self.accuracy_pct / 100.0 * size, drift)

    def v(self, v_pu: float, age_s: float) -> float:
        drift = self.age_v_pct_per_min / 100.0 * v_pu * max(age_s, 0.0) / 60.0
        return math.hypot(self.v_accuracy_pct / 100.0 * v_pu, drift)


def sigmas(config: Config) -> dict[str, Sigma]:
    """Each meter's ``Sigma``: the ``[estimation]`` table's, with the meter's own
    ``accuracy_pct`` where it gives one."""
    est = config.estimation
    return {
        d.name: Sigma(
            accuracy_pct=d.accuracy_pct if d.accuracy_pct is not None else est.accuracy_pct,
            v_accuracy_pct=est.v_accuracy_pct,
            floor_kw=est.floor_kw,
            age_pq_pct_per_min=est.age_pq_pct_per_min,
            age_v_pct_per_min=est.age_v_pct_per_min,
        )
        for d in config.devices
        if d.kind == "meter"
    }


def measurements(
    head: MeterReading,
    meters: Mapping[str, MeterReading],
    *,
    network: Network,
    bus: Mapping[str, int],
    sigma: Mapping[str, Sigma],
) -> tuple[list[Measurement], dict[str, str]]:
    """The interval's measurements (head P, Q and V, each bus meter's P, Q and V), and for
    each meter whose voltage was left out, why."""
    from optimizer import Measurement  # noqa: PLC0415

    out: list[Measurement] = []
    refused: dict[str, str] = {}
    hs = sigma[head.device]
    out.append(
        Measurement(
            source=head.device,
            kind="head_p",
            bus=network.slack_bus,
            value=head.p_kw,
            sigma=hs.pq(head.p_kw, head.age_s),
        )
    )
    if head.q_kvar is not None:
        out.append(
            Measurement(
                source=head.device,
                kind="head_q",
                bus=network.slack_bus,
                value=head.q_kvar,
                sigma=hs.pq(head.q_kvar, head.age_s),
            )
        )
    if head.v_ll_v is not None:
        base_v = network.bus(network.slack_bus).base_kv * 1000.0
        v_pu = head.v_ll_v / base_v
        low, high = V_PLAUSIBLE_PU
        if math.isfinite(v_pu) and low <= v_pu <= high:  # else slack_voltage says why
            out.append(
                Measurement(
                    source=head.device,
                    kind="v",
                    bus=network.slack_bus,
                    value=v_pu,
                    sigma=hs.v(v_pu, head.age_s),
                )
            )
    for name, r in sorted(meters.items()):
        b, s = bus[name], sigma[name]
        out.append(
            Measurement(source=name, kind="p", bus=b, value=r.p_kw, sigma=s.pq(r.p_kw, r.age_s))
        )
        if r.q_kvar is not None:
            out.append(
                Measurement(
                    source=name,
                    kind="q",
                    bus=b,
                    value=r.q_kvar,
                    sigma=s.pq(r.q_kvar, r.age_s),
                )
            )
        if r.v_ll_v is not None:
            base_v = network.bus(b).base_kv * 1000.0
            v_pu = r.v_ll_v / base_v
            low, high = V_PLAUSIBLE_PU
            if math.isfinite(v_pu) and low <= v_pu <= high:
                out.append(
                    Measurement(source=name, kind="v", bus=b, value=v_pu, sigma=s.v(v_pu, r.age_s))
                )
            else:
                refused[name] = (
                    f"reads {r.v_ll_v:g} V line to line, {v_pu:.3g} p.u. of bus {b}'s base "
                    f"{base_v / 1000.0:g} kV: outside {low:g}..{high:g} p.u."
                )
    return out, refused


@dataclass(frozen=True, slots=True, kw_only=True)
class EstimateSummary:
    """What an interval's record keeps of the estimate."""

    loads_kw: Mapping[int, float]
    loads_kvar: Mapping[int, float]
    v_pu: Mapping[int, float]
    residual: float
    dropped: tuple[str, ...]
    """The meters (sources) with a measurement dropped as bad data, sorted."""

    @property
    def v_min_pu(self) -> float:
        return min(self.v_pu.values())

    @property
    def v_max_pu(self) -> float:
        return max(self.v_pu.values())


class BusEstimator:
    """The controller's state estimator: one ``optimizer.StateEstimator`` for the network,
    the meters' buses and sigmas, the metrics, and which meters are dropped now (for the log)."""

    def __init__(self, config: Config, network: Network, *, metrics: Metrics) -> None:
        from optimizer import StateEstimator  # noqa: PLC0415

        est = config.estimation
        self.network = network
        self.metrics = metrics
        self.estimator = StateEstimator(
            network,
            pseudo_sigma_frac=est.pseudo_sigma_frac,
            bad_data_threshold=est.bad_data_threshold,
            max_drops=est.max_drops,
        )
        self.bus = {d.name: d.bus for d in config.devices if d.kind == "meter"}
        self.bus_meters = tuple(d.name for d in config.bus_meters)
        self.sigma = sigmas(config)
        self._dropped: frozenset[str] = frozenset()
        self._refused: dict[str, str] = {}
        self._failed: str | None = None

    def estimate(
        self,
        head: MeterReading,
        meters: Mapping[str, MeterReading],
        *,
        pseudo_loads_kw: Mapping[int, float],
        pseudo_loads_kvar: Mapping[int, float],
        injections_kw: Mapping[int, float],
        v_slack_pu: float | None,
        injections_kvar: Mapping[int, float] | None = None,
    ) -> EstimateSummary | None:
        """This interval's estimate, or ``None`` when it failed (said once per episode and
        counted: the interval goes on with the head-scaled loads). ``v_slack_pu=None``: the
        slack bus's voltage is estimated with the others, from every voltage measured (the
        head meter's alone is one reading of one meter: its error would shift every bus)."""
        fresh = sum(1 for n in self.bus_meters if n in meters)
        self.metrics.estimation_meters.labels("fresh").set(fresh)
        self.metrics.estimation_meters.labels("stale").set(len(self.bus_meters) - fresh)
        found, refused = measurements(
            head, meters, network=self.network, bus=self.bus, sigma=self.sigma
        )
        self._log_refused(refused)
        try:
            est, suspects = self._estimate(
                found,
                pseudo_loads_kw=pseudo_loads_kw,
                pseudo_loads_kvar=pseudo_loads_kvar,
                injections_kw=injections_kw,
                injections_kvar=injections_kvar or {},
                v_slack_pu=v_slack_pu,
            )
        except Exception as err:  # any failure of the math: one line, and go on
            reason = f"{type(err).__name__}: {err}"
            self.metrics.estimation_failures.inc()
            self.metrics.estimation_residual.set(math.nan)
            if reason != self._failed:
                log.error("estimation_failed", reason=reason, using="head-scaled loads")
                self._failed = reason
            return None
        if self._failed is not None:
            log.info("estimation_recovered")
            self._failed = None
        return self._summarise(est, suspects)

    def _estimate(
        self,
        found: list[Measurement],
        *,
        pseudo_loads_kw: Mapping[int, float],
        pseudo_loads_kvar: Mapping[int, float],
        injections_kw: Mapping[int, float],
        injections_kvar: Mapping[int, float],
        v_slack_pu: float | None,
    ) -> tuple[StateEstimate, list[BadMeasurement]]:
        """The estimate, and the measurements that made a meter a suspect.

        A meter one of whose measurements is dropped as bad data is not believed for the
        others either (a frozen or miswired meter is wrong in P and Q alike): the estimate is
        made again without any of its measurements, the worst first, up to ``max_drops``
        meters. Otherwise its other measurement, as wrong, would be set against the head
        meter's, and with nothing else to tell them apart the head's might go instead."""
        suspects: list[BadMeasurement] = []
        while True:
            est = self.estimator.estimate(
                found,
                pseudo_loads_kw=pseudo_loads_kw,
                pseudo_loads_kvar=pseudo_loads_kvar,
                injections_kw=injections_kw,
                injections_kvar=injections_kvar,
                v_slack_pu=v_slack_pu,
            )
            if not est.dropped or len(suspects) >= self.estimator.max_drops:
                return est, suspects
            worst = est.dropped[0]
            suspects.append(worst)
            found = [m for m in found if m.source != worst.source]

    def _summarise(self, est: StateEstimate, suspects: list[BadMeasurement]) -> EstimateSummary:
        m = self.metrics
        m.estimation_residual.set(est.residual)
        m.estimation_v_sigma_max_pu.set(max(est.v_sigma_pu.values(), default=0.0))
        m.estimation_measurements.set(est.n_measurements)
        bad_data = [*suspects, *est.dropped]
        dropped = sorted({b.source for b in bad_data})
        for name in dropped:
            m.estimation_bad_data.labels(name).inc()
        now = frozenset(dropped)
        said: set[str] = set()
        for bad in bad_data:  # the largest residual first: the one each line names
            if bad.source not in self._dropped and bad.source not in said:
                said.add(bad.source)
                log.warning(
                    "estimation_bad_data",
                    device=bad.source,
                    measurement=bad.kind,
                    bus=bad.bus,
                    normalized_residual=round(bad.normalized_residual, 1),
                    action="dropped from the estimate while it disagrees",
                )
        for name in sorted(self._dropped - now):
            log.info("estimation_bad_data_cleared", device=name)
        self._dropped = now
        summary = EstimateSummary(
            loads_kw=est.loads_kw,
            loads_kvar=est.loads_kvar,
            v_pu=est.v_pu,
            residual=est.residual,
            dropped=tuple(dropped),
        )
        if summary.v_pu:
            m.estimation_v_min_pu.set(summary.v_min_pu)
            m.estimation_v_max_pu.set(summary.v_max_pu)
        return summary

    def _log_refused(self, refused: Mapping[str, str]) -> None:
        """A meter's implausible voltage: counted every interval, said when it begins."""
        for name, reason in refused.items():
            self.metrics.bad_readings.labels(name).inc()
            if name not in self._refused:
                log.warning("meter_voltage_not_used", device=name, reason=reason)
        self._refused = dict(refused)
