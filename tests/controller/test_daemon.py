"""The composition root: ``Daemon.open`` assembles the parts, runs the background ones as named
tasks of one task group, and takes everything down again on the way out."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from controller.clock import FakeClock
from controller.config import LoadedConfig, parse_config
from controller.daemon import Daemon
from controller.dr.intake import MqttSettings
from controller.records import CycleRecord, CycleStatus
from tests.support.net import free_port


def _config(port: int) -> LoadedConfig:
    """A head meter on Modbus and a PV inverter on MQTT, both where nothing listens."""
    data: dict[str, Any] = {
        "site": "t1",
        "interval_s": 5.0,
        "feeder": {"case": "builtin:case33bw"},
        "metrics": {"enabled": False},
        "devices": [
            {
                "name": "head",
                "kind": "meter",
                "bus": 1,
                "head": True,
                "transport": {"type": "tcp", "host": "127.0.0.1", "port": port},
            },
            {
                "name": "pv1",
                "kind": "pv",
                "bus": 18,
                "rating_kw": 100.0,
                "transport": {
                    "type": "mqtt",
                    "host": "127.0.0.1",
                    "port": port,
                    "telemetry_topic": "pv1/state",
                    "paths": {"p_kw": "p"},
                    "setpoint_topic": "pv1/set",
                },
            },
        ],
    }
    return parse_config(data, source="<test>", base_dir=Path.cwd())


def _ours() -> set[str]:
    return {t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("feederd[t1]")}


async def test_the_parts_run_as_named_tasks_and_are_taken_down_on_the_way_out() -> None:
    port = free_port()  # nothing listens: the parts keep trying, with backoff
    mqtt = MqttSettings(
        host="127.0.0.1", port=port, topic_root="feederd/t1", backoff_min_s=0.05, backoff_max_s=0.1
    )
    async with Daemon.open(_config(port), clock=FakeClock(), mqtt=mqtt) as daemon:
        assert _ours() == {"feederd[t1].mqtt", "feederd[t1].device.pv1"}
        rec = await daemon.controller.cycle()
        # nothing answers: no head reading, nothing dispatched or written
        assert rec.status is CycleStatus.NO_HEAD_METER
        assert rec.devices_missing == ("head", "pv1")
        journal = daemon.journal
        assert journal.count() == 1  # the interval is journaled (in memory)
        links = daemon.fleet.links
    assert _ours() == set()
    with pytest.raises(sqlite3.ProgrammingError):
        journal.count()  # closed
    assert len(links) == 1  # the MQTT device keeps its own client; the meter has a link


async def test_run_ticks_the_control_loop_as_a_task_of_the_group_until_stopped() -> None:
    stop = asyncio.Event()
    seen: list[tuple[int, str]] = []

    def on_cycle(rec: CycleRecord) -> None:
        task = asyncio.current_task()
        seen.append((rec.cycle, "" if task is None else task.get_name()))
        if rec.cycle == 3:
            stop.set()

    clock = FakeClock()
    async with Daemon.open(_config(free_port()), clock=clock, on_cycle=on_cycle) as daemon:
        await asyncio.wait_for(daemon.run(stop), 60)  # a hang guard
    assert seen == [(n, "feederd[t1].control") for n in (1, 2, 3)]
    assert clock.monotonic() == pytest.approx(10.0)  # ticks at 0, 5 and 10 s, no drift
    assert _ours() == set()


async def test_release_names_the_controls_it_could_not_give_back() -> None:
    loaded = _config(free_port())
    pv2 = {
        "name": "pv2",
        "kind": "pv",
        "bus": 33,
        "rating_kw": 50.0,
        "transport": {"type": "tcp", "host": "127.0.0.1", "port": free_port()},
    }
    data = loaded.config.model_dump(exclude_unset=True)
    data["devices"].append(pv2)
    loaded = parse_config(data, source="<test>", base_dir=Path.cwd())
    async with Daemon.open(loaded, clock=FakeClock()) as daemon:
        report = await daemon.release()
    # the meter controls nothing and the MQTT inverter reverts on its own timer; the Modbus
    # inverter cannot be reached, so it keeps its control until its revert timer lapses
    assert report.released == ()
    assert report.failed == ("pv2",)
