"""How long the coordinator's allocation LP takes for a city's fleet (issue 17: well under
100 ms for 1,000 feeders).

Draws ``--feeders`` feeders (seeded): a baseline of 0.5 to 6 MW, 5 to 40 % of it flexible, a
convex cost curve of ``--points`` points; one transformer over every ten feeders, rated at 95 %
of their peak sum (a tenth of them bind); one ``import_limit`` target over the whole fleet
asking 20 % of its flexibility. Solves it ``--runs`` times in each mode
(``coordinator.allocation.allocate``, building the LP included) and prints one JSON object:
median and p95 solve ms per mode, and the shortfall (0: the target is deliverable). Then the
whole ``Coordinator.tick`` (``core_tick``: flexibility parsed, the allocation, the journal
writes and the status documents), every feeder's peak moving a little before each tick.

    .venv/bin/python benchmarks/fleet_allocation.py [--feeders 1000] [--points 4] [--runs 30]
        [--core-ticks 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coordinator.allocation import Constraint, FeederInput, Mode, allocate


def fleet(n: int, points: int, seed: int) -> tuple[list[FeederInput], list[Constraint]]:
    rng = np.random.default_rng(seed)
    feeders = []
    for i in range(n):
        top = float(rng.uniform(500, 6000))
        low = top * (1 - float(rng.uniform(0.05, 0.4)))
        kws = np.linspace(low, top, points)
        slopes = np.sort(rng.uniform(0.01, 2.0, points - 1))[::-1]  # convex: steep at the low end
        costs = np.concatenate([np.cumsum((slopes * np.diff(kws))[::-1])[::-1], [0.0]])
        curve = tuple((float(k), float(c)) for k, c in zip(kws, costs, strict=True))
        feeders.append(FeederInput(site=f"f{i}", min_kw=low, max_kw=top, curve=curve))
    constraints = []
    for t in range(0, n, 10):
        group = feeders[t : t + 10]
        constraints.append(
            Constraint(
                name=f"T{t // 10}",
                sites=tuple(f.site for f in group),
                limit_kw=0.95 * sum(f.max_kw for f in group),
            )
        )
    peak = sum(f.max_kw for f in feeders)
    span = sum(f.max_kw - f.min_kw for f in feeders)
    constraints.append(
        Constraint(name="target", sites=tuple(f.site for f in feeders), limit_kw=peak - 0.2 * span)
    )
    return feeders, constraints


def core_ticks(feeders: list[FeederInput], runs: int) -> list[float]:
    """``Coordinator.tick`` ms with every feeder reporting new flexibility before each tick
    (one target over the fleet; the journal on disk; the status documents included)."""
    import logging  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415

    import structlog  # noqa: PLC0415

    from controller.clock import FakeClock  # noqa: PLC0415
    from controller.flex import Flexibility  # noqa: PLC0415
    from coordinator.core import Coordinator  # noqa: PLC0415
    from coordinator.journal import FleetJournal  # noqa: PLC0415
    from coordinator.settings import FeederSpec, FleetSettings  # noqa: PLC0415

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    clock = FakeClock(datetime(2030, 6, 4, 12, tzinfo=UTC))
    fleet = FleetSettings(
        "bench",
        "feederd-fleet/bench",
        "feederd",
        tuple(FeederSpec(f.site, 2 * f.max_kw) for f in feeders),
    )
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        core = Coordinator(fleet, journal=FleetJournal(f"{tmp}/j.sqlite"), clock=clock)
        core.connected(True)
        span = sum(f.max_kw - f.min_kw for f in feeders)
        peak = sum(f.max_kw for f in feeders)
        for n in range(runs + 1):
            for f in feeders:
                drift = 1.0 + 0.01 * ((n * 7 + int(f.site[1:])) % 5)  # peaks move a little
                doc = Flexibility(
                    site=f.site,
                    at=clock.now(),
                    seq=n,
                    interval_s=30.0,
                    window_s=3600.0,
                    import_kw=f.max_kw,
                    limit_kw=None,
                    min_kw=f.min_kw,
                    max_kw=f.max_kw * drift,
                    curve=(*f.curve[:-1], (f.max_kw * drift, 0.0)),
                )
                core.flex_received(f"feederd/{f.site}/flex", json.dumps(doc.to_json()).encode())
            if n == 0:
                end = clock.now() + timedelta(hours=2)
                core.target_received(
                    {
                        "id": "bench",
                        "group": "all",
                        "type": "import_limit",
                        "kw": peak - 0.2 * span,
                        "start": clock.now().isoformat(),
                        "end": end.isoformat(),
                    }
                )
            started = time.perf_counter()
            core.tick()
            if n:
                times.append((time.perf_counter() - started) * 1e3)
            clock.advance(30)
    return times


def _figures(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeders", type=int, default=1000)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument(
        "--core-ticks", type=int, default=10, help="Coordinator.tick runs (0: skip)"
    )
    args = parser.parse_args()
    feeders, constraints = fleet(args.feeders, args.points, args.seed)
    out: dict[str, object] = {"feeders": args.feeders, "points": args.points, "runs": args.runs}
    for mode in Mode:
        times = []
        shortfall = 0.0
        for _ in range(args.runs):
            started = time.perf_counter()
            result = allocate(feeders, constraints, mode=mode)
            times.append((time.perf_counter() - started) * 1e3)
            shortfall = sum(result.shortfall_kw.values())
        out[mode.value] = {
            **_figures(times),
            "shortfall_kw": round(shortfall, 3),
            "status": result.status.value,
        }
    if args.core_ticks:
        out["core_tick"] = _figures(core_ticks(feeders, args.core_ticks))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
