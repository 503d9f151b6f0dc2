"""The daemon, the HIL rig and a gateway of SunSpec bus meters of the test's own, on one clock.

``metered_feeder(buses)`` starts the rig (its DERs and head meter), a Modbus gateway on its own
port serving one model-203 meter per bus in ``buses`` (unit id = bus), and the daemon with those
meters configured (``m05`` at bus 5, ...). ``await fm.step()`` is one interval: the rig's
physics at the tick, each gateway meter set to what its bus's customers really draw there (the
physics' ``bus_p_kw``/``bus_q_kvar``, consumption positive, DERs excluded) and its voltage,
one control cycle, the clock moved on. ``lie`` changes what one meter reports (a wrong sign, a
wrong CT ratio); the gateway's ``frozen`` fault freezes one. Every verdict is the physics'.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.clock import FakeClock
from controller.commands.rig.config import merge, revert_s_for
from controller.config import LoadedConfig, parse_config
from controller.daemon import Daemon
from controller.records import CycleRecord
from hil import HilRig, PhysicsState
from hil.server import SunSpecServer
from hil.sim_devices import SimMeter

INTERVAL_S = 5.0
V_BASE_LL_V = 12_660.0
"""The 33-bus case's base voltage (12.66 kV)."""


def meter_name(bus: int) -> str:
    return f"m{bus:02d}"


@dataclass
class MeteredFeeder:
    rig: HilRig
    daemon: Daemon
    clock: FakeClock
    gateway: SunSpecServer
    meters: dict[int, SimMeter]
    lie: dict[int, Callable[[float], float]] = field(default_factory=dict)
    """A bus's meter reports ``lie[bus](true_p_kw)`` instead of the truth."""
    states: list[PhysicsState] = field(default_factory=list)

    @property
    def loaded(self) -> LoadedConfig:
        return self.daemon.loaded

    async def step(self) -> CycleRecord:
        state = await self.rig.step()
        self.states.append(state)
        for bus, meter in self.meters.items():
            p = state.bus_p_kw[bus]
            meter.update(
                p_kw=self.lie[bus](p) if bus in self.lie else p,
                q_kvar=state.bus_q_kvar[bus],
                v_ll_v=state.v_pu[bus] * V_BASE_LL_V,
            )
        record = await self.daemon.controller.cycle()
        self.clock.advance(INTERVAL_S)
        return record


@contextlib.asynccontextmanager
async def metered_feeder(
    buses: Sequence[int],
    *,
    rig: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    meter_entry: Mapping[str, Any] | None = None,
    extra_devices: Sequence[Mapping[str, Any]] = (),
) -> AsyncIterator[MeteredFeeder]:
    clock = FakeClock()
    options = {
        "solve_on_write": False,
        "load_scale": lambda _t: 1.0,
        "pv_available_frac": lambda _t: 0.8,
        **(rig or {}),
    }
    async with HilRig(monotonic=clock.monotonic, physics_period_s=None, **options) as hil:
        base = hil.physics.base_bus_load_kw
        meters = {
            b: SimMeter(
                meter_name(b),
                bus=b,
                p_max_kw=max(3.0 * base.get(b, 0.0), 30.0),
                v_nominal_ll_v=V_BASE_LL_V,
                monotonic=clock.monotonic,
            )
            for b in buses
        }
        async with SunSpecServer(dict(meters)) as gateway:
            entries = [
                {
                    "name": meter_name(b),
                    "kind": "meter",
                    "bus": b,
                    "transport": {
                        "type": "tcp",
                        "host": "127.0.0.1",
                        "port": gateway.port,
                        "unit": b,
                    },
                    **(meter_entry or {}),
                }
                for b in buses
            ]
            doc: dict[str, Any] = {
                "site": "est",
                "interval_s": INTERVAL_S,
                "feeder": {"case": "builtin:case33bw", "v_min_pu": 0.92, "v_max_pu": 1.05},
                "metrics": {"enabled": False},
                "poll": {"timeout_s": 2.0},
                "devices": [
                    *hil.config_devices(revert_s=revert_s_for(INTERVAL_S)),
                    *entries,
                    *extra_devices,
                ],
            }
            loaded = parse_config(merge(doc, overrides or {}), source="<test>", base_dir=Path.cwd())
            async with Daemon.open(loaded, clock=clock) as daemon:
                yield MeteredFeeder(
                    rig=hil, daemon=daemon, clock=clock, gateway=gateway, meters=meters
                )
