"""``feederd solve --case FILE.m [--json] ...``: one dispatch on a MATPOWER case.

Prints the LP's estimates and, for comparison, the AC power flow at the dispatched point.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from controller.commands.args import non_negative, number, positive, positive_int

if TYPE_CHECKING:
    from optimizer import DispatchInput, DispatchResult, HorizonSpec, Network

HELP = "one dispatch of a MATPOWER case; the LP's estimates and the AC check"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--case", required=True, help="MATPOWER case file (.m, version 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_input_arguments(parser)
    parser.add_argument("--write-mps", metavar="PATH", help="write the LP solved (last pass)")
    parser.add_argument(
        "--passes",
        type=positive_int,
        default=3,
        help="re-linearise the losses at the dispatched point this many times (default 3)",
    )
    parser.add_argument("--solver", choices=("highs", "cbc"), default="highs")


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `solve` and `bench dispatch` share."""
    parser.add_argument("--import-limit-kw", type=number, default=None, help="feeder import limit")
    parser.add_argument(
        "--export-limit-kw", type=non_negative, default=None, help="feeder export limit"
    )
    parser.add_argument(
        "--synthetic-ders",
        action="store_true",
        help="PV at every load bus (1.5 x load, 80%% available), a battery at every fifth; "
        "import limit 70%% of the load unless given",
    )
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument(
        "--horizon", type=positive_int, default=1, help="steps of --interval-s (default 1)"
    )
    shape.add_argument(
        "--horizon-h",
        type=non_negative,
        default=None,
        metavar="H",
        help="a multi-resolution horizon of H hours (the daemon's shape): --fine-steps steps of "
        "--interval-s, then blocks of --block-s",
    )
    parser.add_argument("--fine-steps", type=positive_int, default=4, help="default 4")
    parser.add_argument("--block-s", type=positive, default=900.0, help="default 900")
    parser.add_argument(
        "--network-steps",
        type=_network_steps,
        default=1,
        metavar="K|all",
        help="steps modelled with the full network, the rest with the reduced tail model "
        "(default 1, the daemon's; 'all' for the full network on every step)",
    )
    parser.add_argument("--interval-s", type=positive, default=300.0, help="step length")
    parser.add_argument("--v-min-pu", type=positive, default=0.95)
    parser.add_argument("--v-max-pu", type=positive, default=1.05)
    parser.add_argument(
        "--v-slack-pu",
        type=positive,
        default=None,
        help="slack bus voltage (default: the case's, VG of the slack generator, else VM)",
    )


def _network_steps(text: str) -> int | None:
    return None if text == "all" else positive_int(text)


def horizon_spec(args: argparse.Namespace) -> HorizonSpec:
    """The horizon the options describe: `--horizon` uniform steps or `--horizon-h` hours of
    multi-resolution steps, with `--network-steps` (clamped to the horizon; `all`: every
    step)."""
    from optimizer import HorizonSpec  # noqa: PLC0415

    k = args.network_steps
    if args.horizon_h is not None:
        spec = HorizonSpec.multi_resolution(
            args.interval_s,
            hours=args.horizon_h,
            fine_steps=args.fine_steps,
            block_s=args.block_s,
        )
        return HorizonSpec(spec.steps_s, spec.horizon if k is None else min(k, spec.horizon))
    h = args.horizon
    return HorizonSpec((args.interval_s,) * h, h if k is None else min(k, h))


def case_input(net: Network, args: argparse.Namespace) -> DispatchInput:
    """The dispatch input of a case: its loads, optional synthetic DERs, limits, horizon."""
    import numpy as np  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415

    from controller.cli import UsageError  # noqa: PLC0415
    from optimizer import DispatchInput, Forecast, synthetic_ders  # noqa: PLC0415

    pv: tuple[Any, ...] = ()
    batteries: tuple[Any, ...] = ()
    import_limit = args.import_limit_kw
    if args.synthetic_ders:
        ders = synthetic_ders(net)
        pv, batteries = ders.pv, ders.batteries
        if import_limit is None:
            import_limit = ders.import_limit_kw
    forecast = None
    spec = horizon_spec(args)
    if spec.horizon > 1:
        hours = np.asarray(spec.starts_s) / 3600.0
        forecast = Forecast(  # a day's shape: evening load peak, midday sun, peak price
            load=pd.Series(1.0 + 0.15 * np.sin(2 * np.pi * (hours - 12.0) / 24.0)),
            pv=pd.Series(np.clip(np.cos(2 * np.pi * hours / 24.0), 0.05, None) / 1.0),
            price=pd.Series(0.10 + 0.05 * np.sin(2 * np.pi * (hours - 12.0) / 24.0)),
        )
    if args.v_min_pu > args.v_max_pu:
        raise UsageError(f"--v-min-pu {args.v_min_pu} exceeds --v-max-pu {args.v_max_pu}")
    return DispatchInput(
        loads_kw=net.loads_kw,
        loads_kvar=net.loads_kvar,
        pv=pv,
        batteries=batteries,
        interval_s=args.interval_s,
        import_limit_kw=import_limit,
        export_limit_kw=args.export_limit_kw,
        v_min_pu=args.v_min_pu,
        v_max_pu=args.v_max_pu,
        v_slack_pu=args.v_slack_pu,
        horizon=spec.horizon,
        steps_s=spec.steps_s,
        network_steps=spec.network_steps,
        forecast=forecast,
    )


def ac_check(net: Network, inp: DispatchInput, res: DispatchResult) -> dict[str, Any]:
    """The AC power flow at the dispatched point of step 0."""
    from optimizer import solve_powerflow  # noqa: PLC0415

    p = {b: inp.loads_kw.get(b, 0.0) for b in net.bus_ids}
    q = {b: inp.loads_kvar.get(b, 0.0) for b in net.bus_ids}
    for u in inp.pv:
        p[u.bus] -= res.pv_kw[u.name]
        q[u.bus] -= res.pv_kvar.get(u.name, 0.0)
    for b in inp.batteries:
        p[b.bus] -= res.battery_kw[b.name]
    ac = solve_powerflow(net, p_kw=p, q_kvar=q, v_slack_pu=inp.slack_v(net))
    return {
        "converged": ac.converged,
        "import_kw": ac.import_kw,
        "losses_kw": ac.losses_kw,
        "v_min_pu": ac.v_min_pu,
        "v_min_bus": ac.v_min_bus,
        "v_max_pu": ac.v_max_pu,
    }


def run(args: argparse.Namespace) -> int:
    from controller.cli import UsageError  # noqa: PLC0415
    from controller.commands.powerflow import load_case  # noqa: PLC0415
    from optimizer import Dispatcher  # noqa: PLC0415

    net = load_case(args.case)
    inp = case_input(net, args)
    dispatcher = Dispatcher(net, time_limit_s=60.0, passes=args.passes, solver=args.solver)
    res = dispatcher.solve(inp)
    out: dict[str, Any] = {
        "case": net.name,
        "status": res.status.value,
        "solver": res.solver,
        "message": res.message,
        "solve_ms": res.solve_ms,
        "v_slack_pu": inp.slack_v(net),
    }
    if res.status.has_setpoints:
        session = dispatcher.session
        out |= {
            "objective": res.objective,
            "objective_constant": session.highs.getLp().offset_ if session is not None else 0.0,
            "import_kw": res.import_kw,
            "import_limit_kw": inp.import_limit_kw,
            "export_limit_kw": inp.export_limit_kw,
            "losses_kw": res.losses_kw,
            "v_min_pu": res.v_min_pu,
            "v_min_bus": res.v_min_bus,
            "v_max_pu": res.v_max_pu,
            "v_max_bus": res.v_max_bus,
            "pv_units": len(inp.pv),
            "batteries": len(inp.batteries),
            "pv_kw": sum(res.pv_kw.values()),
            "pv_kvar": sum(res.pv_kvar.values()),
            "battery_kw": sum(res.battery_kw.values()),
            "curtailed_kw": res.curtailed_kw,
            "import_slack_kw": res.import_slack_kw,
            "export_slack_kw": res.export_slack_kw,
            "voltage_slack_pu": res.voltage_slack_pu,
            "rating_slack_kva": res.rating_slack_kva,
            "horizon": inp.horizon,
            "network_steps": inp.n_network_steps,
            "step_s": list(res.step_s),
            "import_plan_kw": list(res.import_plan_kw),
            "passes": res.passes,
            "n_vars": session.n_col if session is not None else None,
            "n_cons": session.n_row if session is not None else None,
            "ac": ac_check(net, inp, res),
        }
    if args.write_mps:
        try:
            dispatcher.write_mps(inp, args.write_mps, dispatcher.last_points)
        except OSError as err:
            raise UsageError(f"--write-mps {args.write_mps}: {err.strerror}") from None
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key}: {value}")
    return 0 if res.status.has_setpoints else 1
