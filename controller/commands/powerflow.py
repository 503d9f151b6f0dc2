"""``feederd powerflow --case FILE.m [--json]``: AC power flow of a MATPOWER case."""

from __future__ import annotations

import argparse
import json
from typing import Any

from controller.commands.args import positive

HELP = "AC power flow of a MATPOWER case (backward/forward sweep)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--case", required=True, help="MATPOWER case file (.m, version 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--v-slack-pu",
        type=positive,
        default=None,
        help="slack bus voltage (default: the case's, VG of the slack generator, else VM)",
    )


def load_case(path: str) -> Any:
    """The network of a case file; a one-line `UsageError` for a missing or bad file."""
    from pathlib import Path  # noqa: PLC0415

    from controller.cli import UsageError  # noqa: PLC0415
    from optimizer import NetworkError, load_matpower  # noqa: PLC0415

    if not Path(path).is_file():
        raise UsageError(f"{path}: no such case file")
    try:
        return load_matpower(path)
    except NetworkError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        raise UsageError(f"{path}: {first}" if not first.startswith(path) else first) from None


def run(args: argparse.Namespace) -> int:
    from optimizer import solve_powerflow  # noqa: PLC0415

    net = load_case(args.case)
    res = solve_powerflow(net, p_kw=net.loads_kw, q_kvar=net.loads_kvar, v_slack_pu=args.v_slack_pu)
    out = {
        "case": net.name,
        "buses": len(net.buses),
        "converged": res.converged,
        "iterations": res.iterations,
        "load_kw": round(net.total_load_kw, 6),
        "fixed_gen_kw": round(sum(g.p_kw for g in net.generators), 6),
        "v_slack_pu": net.v_slack_pu if args.v_slack_pu is None else args.v_slack_pu,
        "import_kw": res.import_kw,
        "import_kvar": res.import_kvar,
        "losses_kw": res.losses_kw,
        "losses_kvar": res.losses_kvar,
        "v_min_pu": res.v_min_pu,
        "v_min_bus": res.v_min_bus,
        "v_max_pu": res.v_max_pu,
        "v_max_bus": res.v_max_bus,
    }
    if args.json:
        print(json.dumps(out))
    else:
        state = "converged" if res.converged else "NOT converged"
        print(f"{net.name}: {len(net.buses)} buses, {state} in {res.iterations} sweeps")
        print(f"slack bus {net.slack_bus} at {out['v_slack_pu']:.4f} p.u.")
        if net.generators:
            print(
                f"{len(net.generators)} generator(s) at other buses as fixed injections: "
                f"{out['fixed_gen_kw']:.1f} kW"
            )
        print(f"import {res.import_kw:.1f} kW / {res.import_kvar:.1f} kvar")
        print(f"losses {res.losses_kw:.2f} kW / {res.losses_kvar:.2f} kvar")
        print(f"lowest voltage {res.v_min_pu:.4f} p.u. at bus {res.v_min_bus}")
        print(f"highest voltage {res.v_max_pu:.4f} p.u. at bus {res.v_max_bus}")
    return 0 if res.converged else 1
