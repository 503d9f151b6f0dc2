"""SIGTERM against the HIL rig: ``on_stop = "release"`` disables every control before exiting;
the default ``"revert"`` leaves them to expire on the devices' own revert timers. And each
driver's ``release()`` on a 700-series device (models 704/713).

How fast feederd stops is a figure for the benchmarks, not a test: here it must stop, exit 0,
say so, and leave the controls as ``on_stop`` asks. The revert timers lapse on the rig's clock,
moved ahead once the daemon is gone (no waiting for them)."""

from __future__ import annotations

import signal
import stat
from pathlib import Path

import pytest
from ops_helpers import Daemon, RigClock, daemon_toml, eventually

from devices import (
    BatterySetpoint,
    ModbusTcpLink,
    PvSetpoint,
    SunSpecBattery,
    SunSpecInverter,
)
from hil import HilRig
from hil.server import SunSpecServer
from tests.support.der700 import Der700

REVERT_S = 30
"""Longer than anything here takes: a control reverts only when the test moves the rig's clock."""
STOP_GUARD_S = 20.0
"""A hang guard for the exit after SIGTERM (the stop time itself is a benchmark figure)."""


def _controls(rig: HilRig) -> dict[str, tuple[object, ...]]:
    """What each simulated device holds now: PV (WMaxLim_Ena, WMaxLimPct), battery
    (StorCtl_Mod,)."""
    out: dict[str, tuple[object, ...]] = {}
    for d in rig.devices:
        if d.kind == "pv":
            v = rig.sim(d.name).values(123)
            out[d.name] = (v["WMaxLim_Ena"], v["WMaxLimPct"])
        elif d.kind == "battery":
            out[d.name] = (rig.sim(d.name).values(124)["StorCtl_Mod"],)
    return out


def _all_engaged(rig: HilRig) -> bool:
    return all(c[0] != 0 for c in _controls(rig).values())


def _all_released(rig: HilRig) -> bool:
    return all(c[0] == 0 for c in _controls(rig).values())


def _modes(folder: Path, pattern: str) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.glob(pattern)}


async def _revert_timers_lapse(rig: HilRig, rig_clock: RigClock) -> None:
    """Move the rig past every revert timer the daemon wrote, and let the devices see it."""
    rig_clock.advance(REVERT_S + 1)
    await rig.step()


@pytest.mark.integration
@pytest.mark.parametrize("on_stop", ["release", "release-one-silent", "revert"])
async def test_sigterm_releases_or_leaves_controls_to_revert(
    on_stop: str, rig: HilRig, rig_clock: RigClock, tmp_path: Path
) -> None:
    silent = next(d.name for d in rig.devices if d.kind == "pv") if "silent" in on_stop else None
    on_stop = on_stop.removesuffix("-one-silent")
    config = tmp_path / "feederd.toml"
    config.write_text(
        daemon_toml(
            rig,
            tmp_path / "journal.sqlite",
            revert_s=REVERT_S,
            # the release may take 5 s (a hang guard on a busy machine); a request to the silent
            # device gives up after its own timeout, 0.7 s, inside the 0.8 s poll deadline
            interval_s=1.0,
            poll_timeout_s=0.7,
            deadline_fraction=0.8,
            extra=f'on_stop = "{on_stop}"\nrelease_timeout_s = 5.0',
        )
    )
    assert _all_released(rig)  # nothing engaged before the daemon writes
    async with Daemon(config) as daemon:
        await daemon.wait_log("cycle", 60)
        # every PV limit enabled and every battery under control, rewritten each interval
        await eventually(lambda: _all_engaged(rig), f"all controls engaged: {_controls(rig)}")
        await daemon.wait_log("cycle", after=len(daemon.logs))
        # the journal the daemon writes, with its WAL companions, is owner-only
        journal = _modes(tmp_path, "journal*")
        assert {"journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm"} <= set(journal)
        assert set(journal.values()) == {0o600}, journal
        if silent is not None:  # it stops answering just before the stop
            rig.set_silent(silent)
        daemon.signal(signal.SIGTERM)
        rc = await daemon.wait_exit("the exit after SIGTERM", STOP_GUARD_S)
    assert rc == 0, daemon.stderr[-20:]
    assert daemon.events("stopping"), daemon.stderr[-20:]
    assert daemon.events("stopping")[0]["reason"] == "signal"
    assert not any("Traceback" in line for line in daemon.stderr), daemon.stderr[-20:]
    held = _controls(rig)
    if on_stop == "release":
        released = daemon.events("released")
        assert released
        assert released[0]["controls"] == len(held)
        if silent is None:
            assert _all_released(rig), held
            assert released[0]["failed"] == 0
        else:  # the others are released; the silent one is left to its revert timer
            assert all(c[0] == 0 for n, c in held.items() if n != silent), held
            assert held[silent][0] == 1
            assert released[0]["failed"] == 1
            failed = daemon.events("release_failed")
            assert failed[0]["device"] == silent
            assert failed[0]["error"].startswith("DeviceUnavailable: "), failed
            assert "No response received" in failed[0]["error"], failed  # pymodbus's timeout
            await _revert_timers_lapse(rig, rig_clock)
            assert _all_released(rig), _controls(rig)
    else:
        # the controls stay as last written ...
        assert all(c[0] != 0 for c in held.values()), held
        assert not daemon.events("released")
        # ... until each device's revert timer lapses (the PV limit fails open at 100 %)
        await _revert_timers_lapse(rig, rig_clock)
        assert _all_released(rig), _controls(rig)
        assert all(c[1] == 100.0 for n, c in _controls(rig).items() if len(c) == 2)


async def test_release_disables_model_704_controls_too() -> None:
    """Each driver releases through its own control model: on a 700-series DER the PV limit
    (``WMaxLimPctEna``) and the power setpoint (``WSetEna``) are disabled, not 123/124."""
    sim = Der700(w_kw=20.0)
    async with SunSpecServer(sim) as server:
        link = ModbusTcpLink("127.0.0.1", server.port)
        pv = SunSpecInverter("der", link, 1, rating_kw=100.0, revert_s=30)
        battery = SunSpecBattery("der", link, 1, rating_kw=50.0, energy_kwh=200.0, revert_s=30)
        try:
            await pv.read()
            await pv.write(PvSetpoint(device="der", p_max_kw=40.0))
            await battery.write(BatterySetpoint(device="der", p_kw=10.0))
            assert (sim.values(704)["WMaxLimPctEna"], sim.values(704)["WSetEna"]) == (1, 1)
            await pv.release()
            await battery.release()
            assert (sim.values(704)["WMaxLimPctEna"], sim.values(704)["WSetEna"]) == (0, 0)
        finally:
            await link.close()
