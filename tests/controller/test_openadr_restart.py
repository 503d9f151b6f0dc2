"""A VTN's event survives a restart of the daemon, with the VTN away meanwhile: the event is in
the journal, the restarted daemon holds it at the feeder head (the rig's physics says) before it
has reached the VTN, and when the VTN is back the VEN registers again and takes the event the
VTN sends again as the one it holds, storing nothing new.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tests.controller.openadr_helpers import (
    INTERVAL_S,
    LIMIT_1_KW,
    held,
    in_force,
    metric,
    persisted,
    vtn_feeder,
)
from tests.support.vtn import Pki, Vtn
from tests.support.wait import until


async def test_an_accepted_event_survives_a_restart_with_the_vtn_away(
    pki: Pki, tmp_path: Path
) -> None:
    journal = {"journal": {"path": str(tmp_path / "journal.sqlite")}}
    async with Vtn(pki) as vtn:
        async with vtn_feeder(vtn, overrides=journal) as sim:
            await until(lambda: metric(sim, "feederd_openadr_registered") == 1, "registration")
            start = sim.clock.now() + dt.timedelta(seconds=INTERVAL_S)
            vtn.add_event([(start, 60 * INTERVAL_S, 1)], event_id="kept")
            await until(lambda: bool(vtn.responses_to("kept")), "the answer to the event")
            for _ in range(4):
                await sim.step()
            assert held((await sim.physics()).head_p_kw, LIMIT_1_KW)
            stopped_at = sim.clock.now()

        await vtn.stop()  # the VTN is away while the daemon restarts
        answers = len(vtn.responses_to("kept"))
        async with vtn_feeder(vtn, overrides=journal, start=stopped_at) as sim:
            assert in_force(sim) == ["oadr:kept:0:0"]  # from the journal, before any exchange
            measured = []
            for _ in range(3):
                await sim.step()
                measured.append((await sim.physics()).head_p_kw)
            assert all(held(m, LIMIT_1_KW) for m in measured), measured
            assert metric(sim, "feederd_openadr_registered") == 0

            await vtn.restart()
            await until(lambda: metric(sim, "feederd_openadr_registered") == 1, "registration")
            await until(
                lambda: len(vtn.responses_to("kept")) > answers,
                "the answer to the event sent again",
            )
            assert vtn.responses_to("kept")[-1].opt_type == "optIn"
            assert in_force(sim) == ["oadr:kept:0:0"]
            assert persisted(sim) == ["oadr:kept:0:0"]  # the same event, not stored twice
            assert metric(sim, "feederd_openadr_events_total", result="accepted") == 0
