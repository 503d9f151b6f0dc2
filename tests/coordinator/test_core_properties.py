"""Whatever the feeders say and whenever the coordinator restarts, what it publishes stays
consistent: no event is sent twice, every cancel is of an event it sent and had not cancelled,
a feeder holds at most one live event per target, and a replaced event is cancelled only after
its successor went out."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.coordinator.core_helpers import Fleet, dr_status, events, target

SITES = ("north-1", "north-2", "north-3")

steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("flex"),
            st.sampled_from(SITES),
            st.floats(300, 500),  # min_kw
            st.floats(10, 300),  # flexibility
            st.floats(0.1, 5),  # slope
        ),
        st.tuples(st.just("advance"), st.sampled_from([10.0, 30.0, 100.0, 900.0])),
        st.tuples(st.just("offline"), st.sampled_from(SITES)),
        st.tuples(st.just("reject"), st.sampled_from(SITES)),
        st.tuples(st.just("restart")),
        st.tuples(st.just("cancel")),
        st.tuples(st.just("target"), st.floats(900, 1800), st.sampled_from(["north", "pair"])),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(steps)
def test_publications_stay_consistent(plan: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fleet = Fleet(str(Path(tmp) / "fleet.sqlite"))
        for site in SITES:
            fleet.flex(site)
        fleet.core.target_received(target(kw=1500))
        sent: set[tuple[str, str]] = set()
        live: dict[tuple[str, str], str] = {}  # (site, target) -> event id
        cancelled: set[tuple[str, str]] = set()
        n_targets = 1

        def tick() -> None:
            for site, payload in events(fleet.core.tick()):
                key = (site, payload["id"])
                tgt = payload["id"].split(":")[1]
                if payload.get("cancel"):
                    assert key in sent, f"cancel of an event never sent: {key}"
                    assert key not in cancelled, f"cancelled twice: {key}"
                    cancelled.add(key)
                    if live.get((site, tgt)) == payload["id"]:
                        del live[(site, tgt)]
                else:
                    assert key not in sent, f"sent twice: {key}"
                    sent.add(key)
                    live[(site, tgt)] = payload["id"]

        tick()
        for step in plan:
            kind = step[0]
            if kind == "flex":
                _, site, low, width, slope = step
                fleet.flex(site, min_kw=low, max_kw=low + width, slope=slope)
            elif kind == "advance":
                fleet.advance(step[1])
            elif kind == "offline":
                fleet.core.online_received(f"feederd/{step[1]}/online", b"false")
            elif kind == "reject":
                site = step[1]
                held = [e for (s, _), e in live.items() if s == site]
                if held:
                    decision = {"id": held[0], "result": "rejected", "reason": "no"}
                    fleet.core.dr_status_received(
                        f"feederd/{site}/dr/status", dr_status(site, fleet.clock.now(), [decision])
                    )
            elif kind == "restart":
                fleet.restart()
            elif kind == "cancel":
                fleet.core.target_received({"id": f"t{n_targets - 1}", "cancel": True})
            elif kind == "target":
                fleet.core.target_received(
                    target(f"t{n_targets}", kw=step[1], group=step[2], start=fleet.clock.now())
                )
                n_targets += 1
            tick()
