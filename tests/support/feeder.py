"""The daemon against the HIL rig on one simulated clock, with the tests' defaults.

``feeder(...)`` opens a ``Simulation`` (the product's own: ``controller.commands.rig``) with the
test defaults: the 33-bus rig at nominal load and 80% sun, a 5 s interval (simulated: it costs
no wall time) and a 2 s request timeout (real: generous on a busy machine; only a silent
device pays it). ``await sim.step()`` is one interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from controller.commands.rig.config import merge
from controller.commands.rig.simulation import Simulation

INTERVAL_S = 5.0
TEST_DEFAULTS: dict[str, Any] = {"interval_s": INTERVAL_S, "poll": {"timeout_s": 2.0}}
RIG_DEFAULTS: dict[str, Any] = {
    "load_scale": lambda _t: 1.0,
    "pv_available_frac": lambda _t: 0.8,
    "solve_on_write": False,
}


def feeder(
    *,
    import_limit_kw: float | None = None,
    rig: Mapping[str, Any] | None = None,
    devices: Mapping[str, Mapping[str, Any]] | None = None,
    **overrides: Any,
) -> AbstractAsyncContextManager[Simulation]:
    """The daemon and the rig on a simulated clock; ``overrides`` is a partial feederd.toml
    (``poll={"stale_after_intervals": 2}``), ``rig`` the ``HilRig`` options to change,
    ``devices`` settings for the rig's devices by kind or name (``{"load": {"min_kw": 20}}``)."""
    cfg = merge(TEST_DEFAULTS, overrides)
    if import_limit_kw is not None:
        cfg = merge(cfg, {"dr": {"import_limit_kw": import_limit_kw}})
    return Simulation.open(
        overrides=cfg, rig_options={**RIG_DEFAULTS, **(rig or {})}, devices=devices
    )
