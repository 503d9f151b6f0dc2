"""``feederd bench dispatch``: how fast the kept LP re-solves interval after interval.

Solves `--intervals` consecutive intervals whose loads and PV availability move by a seeded
random few percent (each interval's setpoints become the next one's last setpoints, as in the
daemon), and prints one JSON object: `build_ms` (the first interval: building the LP and
solving it from scratch), `model_build_ms` (assembling the LP and handing it to HiGHS alone),
`interval_ms_median` and `interval_ms_p95` over the intervals that solved (operating points,
update, solve, read-out), `failures` (intervals that timed out or failed: counted, never
timed), `raw_highs_cold_ms` (a fresh HiGHS loading and solving the same LP, measured in the
same run), their ratio, `peak_rss_mb`, and the LP size. With `--compare-ms X` it also prints
`median / X` under `--compare-label` (e.g. EMHASS's warm re-solve measured here).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import time
from typing import Any

from controller.commands.args import non_negative, positive, positive_int
from controller.commands.solve import add_input_arguments

HELP = "time the persistent dispatch LP against a cold HiGHS solve"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--case", help="MATPOWER case file (.m, version 2)")
    where.add_argument(
        "--synthetic-feeder", type=positive_int, metavar="N", help="a seeded N-bus radial feeder"
    )
    add_input_arguments(parser)
    parser.add_argument("--intervals", type=positive_int, default=50, help="default 50")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--time-limit-s", type=positive, default=60.0, help="per interval (default 60)"
    )
    parser.add_argument(
        "--cold-runs",
        type=int,
        default=3,
        help="cold HiGHS solves for raw_highs_cold_ms (median; 0 skips; default 3)",
    )
    parser.add_argument(
        "--compare-ms",
        type=non_negative,
        default=None,
        metavar="X",
        help="a reference figure (ms) to print the median's ratio to",
    )
    parser.add_argument("--compare-label", default="reference", help="the reference's name")
    parser.add_argument("--json", action="store_true", help="print one JSON object (default)")


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def run(args: argparse.Namespace) -> int:
    import numpy as np  # noqa: PLC0415

    from controller.cli import UsageError  # noqa: PLC0415
    from controller.commands.powerflow import load_case  # noqa: PLC0415
    from controller.commands.solve import case_input  # noqa: PLC0415
    from optimizer import Dispatcher, DispatchInput, synthetic_feeder  # noqa: PLC0415

    if args.synthetic_feeder is not None:
        if args.synthetic_feeder < 3:
            raise UsageError(
                f"--synthetic-feeder needs at least 3 buses, got {args.synthetic_feeder}"
            )
        net = synthetic_feeder(args.synthetic_feeder, seed=args.seed)
    else:
        net = load_case(args.case)
    base = case_input(net, args)
    rng = np.random.default_rng(args.seed)
    dispatcher = Dispatcher(net, time_limit_s=args.time_limit_s)

    def moved(prev: DispatchInput, last: dict[str, float]) -> DispatchInput:
        jitter = 1.0 + 0.03 * rng.standard_normal(len(net.buses))
        factor = dict(zip(net.bus_ids, jitter, strict=True))
        pv = tuple(
            dataclasses.replace(
                u,
                available_kw=max(0.0, u.available_kw * (1.0 + 0.03 * rng.standard_normal())),
                last_setpoint_kw=last.get(u.name),
            )
            for u in base.pv
        )
        batteries = tuple(
            dataclasses.replace(b, last_setpoint_kw=last.get(b.name)) for b in base.batteries
        )
        return dataclasses.replace(
            prev,
            loads_kw={b: v * factor[b] for b, v in base.loads_kw.items()},
            loads_kvar={b: v * factor[b] for b, v in base.loads_kvar.items()},
            pv=pv,
            batteries=batteries,
        )

    start = time.perf_counter()
    result = dispatcher.solve(base)
    build_ms = (time.perf_counter() - start) * 1000.0
    first_status = result.status.value
    statuses: dict[str, int] = {}
    times: list[float] = []
    inp = base
    for _ in range(args.intervals):
        last = {**result.pv_kw, **result.battery_kw} if result.status.has_setpoints else {}
        inp = moved(inp, last)
        start = time.perf_counter()
        result = dispatcher.solve(inp)
        elapsed = (time.perf_counter() - start) * 1000.0
        statuses[result.status.value] = statuses.get(result.status.value, 0) + 1
        if result.status.has_setpoints:
            times.append(elapsed)
    session = dispatcher.session
    if session is None:
        raise UsageError("the HiGHS model was never built: the solver failed (see `feederd solve`)")
    cold = (
        statistics.median(session.cold_solve_ms() for _ in range(args.cold_runs))
        if args.cold_runs > 0
        else None
    )
    median = statistics.median(times) if times else None
    out: dict[str, Any] = {
        "case": net.name,
        "buses": len(net.buses),
        "pv_units": len(base.pv),
        "batteries": len(base.batteries),
        "horizon": base.horizon,
        "network_steps": base.n_network_steps,
        "horizon_h": round(sum(base.step_durations_s) / 3600.0, 4),
        "intervals": args.intervals,
        "first_status": first_status,
        "build_ms": round(build_ms, 3),
        "model_build_ms": round(dispatcher.last_build_ms, 3),
        "interval_ms_median": None if median is None else round(median, 3),
        "interval_ms_p95": round(_p95(times), 3) if times else None,
        "solved": len(times),
        "failures": args.intervals - len(times),
        "raw_highs_cold_ms": None if cold is None else round(cold, 3),
        "ratio": None if median is None or not cold else round(median / cold, 4),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "n_vars": session.n_col,
        "n_cons": session.n_row,
        "builds": dispatcher.builds,
        "cold_restarts": session.cold_restarts,
        "statuses": statuses,
    }
    if args.compare_ms is not None:
        out[f"vs_{args.compare_label}"] = (
            None if median is None or not args.compare_ms else round(median / args.compare_ms, 6)
        )
        out[f"{args.compare_label}_ms"] = args.compare_ms
    print(json.dumps(out))
    return 0
