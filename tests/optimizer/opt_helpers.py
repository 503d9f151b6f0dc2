"""Helpers for the optimizer tests: an independent AC engine (pandapower)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from optimizer import Network
from tests.optimizer.estimation_scenarios import truth


@dataclass(frozen=True, slots=True, kw_only=True)
class AcState:
    """pandapower's AC solution."""

    import_kw: float
    losses_kw: float
    vm_pu: Mapping[int, float]


def pandapower_ac(
    net: Network,
    *,
    p_kw: Mapping[int, float],
    q_kvar: Mapping[int, float],
    v_slack_pu: float = 1.0,
) -> AcState:
    """AC power flow by pandapower (Newton-Raphson) of `net` with the given net loads (the
    builder the state estimator's tests use: shunts and line charging included)."""
    t = truth(net, p_kw, q_kvar, {}, v_slack_pu=v_slack_pu)
    return AcState(import_kw=t.import_kw, losses_kw=t.losses_kw, vm_pu=t.v_pu)
