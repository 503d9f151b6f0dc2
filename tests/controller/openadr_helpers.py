"""What the OpenADR end-to-end tests share: the daemon and the HIL rig on a simulated clock with
the VEN pointed at a test VTN (``tests.support.vtn``), and ways to read what came of it.

Two clocks meet here: the control loop runs in simulated time (``sim.step()``), the VEN polls the
VTN in real time. A test never steps the loop while it waits for the network: it waits (``until``,
bounded, for a condition) with the simulated clock standing still, so what the loop sees depends
on what arrived, never on how fast it arrived.

openleadr's VTN keeps its events' status on the wall clock (an event whose end has passed is sent
once as ``completed`` and dropped), so the simulated clock starts ahead of the wall clock and only
moves further ahead: an event a test places on the simulated clock is never over for the VTN
before it is over for the daemon. It starts at one fixed instant (a Tuesday noon, UTC), so the
daemon's plan (prices, forecasts) sees the same day whenever the suite runs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from controller.commands.rig.config import merge
from controller.commands.rig.simulation import Simulation
from controller.records import COMPLIANCE_TOLERANCE
from tests.support.feeder import INTERVAL_S, RIG_DEFAULTS, TEST_DEFAULTS
from tests.support.vtn import Vtn

__all__ = [
    "INTERVAL_S",
    "LEVELS",
    "LIMIT_1_KW",
    "LIMIT_2_KW",
    "SIM_START",
    "held",
    "in_force",
    "logged",
    "metric",
    "persisted",
    "sim_start",
    "vtn_feeder",
]

LIMIT_1_KW = 2000.0
LIMIT_2_KW = 1800.0
"""The rig imports about 2,300 kW at nominal load and 80% sun with no limit; its four 250 kW
batteries can take 300 or 500 kW off that."""
LEVELS = {
    "level_1": {"type": "import_limit", "kw": LIMIT_1_KW},
    "level_2": {"type": "import_limit", "kw": LIMIT_2_KW},
    "level_3": {"type": "reduce_by", "kw": 400.0},
}


def vtn_feeder(
    vtn: Vtn,
    *,
    start: dt.datetime | None = None,
    overrides: Mapping[str, Any] | None = None,
    **openadr: Any,
) -> AbstractAsyncContextManager[Simulation]:
    """The rig and the daemon, its VEN configured for ``vtn``: polling as often as the VTN asks
    (openleadr's VTN asks in whole seconds: 1 s), requests bounded at 5 s; ``overrides``, more
    of the config (a journal file, say); ``start``, the simulated clock's start."""
    table = vtn.ven_config(poll_s=1.0, poll_min_s=0.05, request_timeout_s=5.0, simple=LEVELS)
    config = merge(TEST_DEFAULTS, {"openadr": {**table, **openadr}})
    return Simulation.open(
        overrides=merge(config, overrides or {}),
        rig_options=RIG_DEFAULTS,
        start=start or sim_start(),
    )


SIM_START = dt.datetime(2030, 6, 4, 12, tzinfo=dt.UTC)


def sim_start() -> dt.datetime:
    """``SIM_START``, ahead of the wall clock (see the module's docstring); once the wall clock
    comes within a day of it, the same weekday and hour a week or more ahead."""
    start = SIM_START
    while start < dt.datetime.now(dt.UTC) + dt.timedelta(days=1):
        start += dt.timedelta(weeks=1)
    return start


def metric(sim: Simulation, name: str, **labels: str) -> float:
    value = sim.daemon.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


def in_force(sim: Simulation) -> list[str]:
    """The VEN's DR events the daemon holds now (not cancelled, not over)."""
    return [s.event.id for s in sim.daemon.dr.events_now() if s.source == "openadr"]


def persisted(sim: Simulation) -> list[str]:
    """Every event the VEN ever stored in the journal (cancelled ones too)."""
    return [s.event.id for s in sim.daemon.journal.events() if s.source == "openadr"]


def held(import_kw: float, limit_kw: float) -> bool:
    """The product's own definition of a limit held: within 2% of it."""
    return import_kw <= limit_kw * (1.0 + COMPLIANCE_TOLERANCE)


def logged(logs: Sequence[Mapping[str, Any]], event: str, **fields: Any) -> list[Mapping[str, Any]]:
    return [
        e for e in logs if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
    ]
