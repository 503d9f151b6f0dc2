"""The daemon and the HIL rig on one simulated clock: what ``feederd demo --simulated``, the
tests and anyone testing their own settings drive interval by interval.

``async with Simulation.open(overrides={...}) as sim`` starts a rig (``HilRig`` options in
``rig_options``), builds its config (``rig_config`` with ``overrides``, a partial feederd.toml,
and ``devices``, settings for the rig's device entries by kind or name)
and assembles the daemon (``Daemon.open``) on a ``FakeClock`` (its own, or ``clock``: one
shared by several rigs and daemons, as a fleet's tests have; ``start`` is then ignored).
``await sim.step()`` is one interval: the physics advanced to the tick, one control cycle, the
clock moved on by the interval. Deadlines are on the clock, so what a step does never depends on
how busy the machine is; only the devices' own request timeouts are real seconds (a silent
device costs one).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from controller.clock import FakeClock
from controller.commands.rig.config import rig_config
from controller.config import LoadedConfig
from controller.daemon import Daemon
from controller.dr.intake import MqttSettings
from controller.records import CycleRecord
from hil import HilRig, PhysicsState

__all__ = ["Simulation"]


class Simulation:
    def __init__(self, *, rig: HilRig, daemon: Daemon, clock: FakeClock) -> None:
        self.rig = rig
        self.daemon = daemon
        self.clock = clock

    @property
    def loaded(self) -> LoadedConfig:
        return self.daemon.loaded

    @property
    def interval_s(self) -> float:
        return self.daemon.loaded.config.interval_s

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        *,
        overrides: Mapping[str, Any] | None = None,
        rig_options: Mapping[str, Any] | None = None,
        devices: Mapping[str, Mapping[str, Any]] | None = None,
        start: datetime | None = None,
        mqtt: MqttSettings | None = None,
        site: str = "sim",
        clock: FakeClock | None = None,
    ) -> AsyncIterator[Simulation]:
        clock = FakeClock(start) if clock is None else clock  # given: shared with other rigs
        options = {"solve_on_write": False, **(rig_options or {})}
        options.setdefault("now", clock.now)  # the AMI meters' timestamps: the daemon's clock
        async with HilRig(monotonic=clock.monotonic, physics_period_s=None, **options) as rig:
            loaded = rig_config(
                rig, overrides=overrides, site=site, case=options.get("case"), devices=devices
            )
            async with Daemon.open(loaded, clock=clock, mqtt=mqtt) as daemon:
                yield cls(rig=rig, daemon=daemon, clock=clock)

    async def physics(self) -> PhysicsState:
        """Advance the rig's physics to the clock (what the meters will read)."""
        return await self.rig.step()

    async def step(self) -> CycleRecord:
        """One interval: the physics at the tick, one control cycle, the clock moved on."""
        await self.rig.step()
        record = await self.daemon.controller.cycle()
        self.clock.advance(self.interval_s)
        return record
