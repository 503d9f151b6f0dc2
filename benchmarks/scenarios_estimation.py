"""The bundled scenarios on the varied rig, with state estimation on and off, side by side.

Each bundled scenario runs twice through the same runner as ``feederd sim`` (the real daemon
against the HIL rig, simulated time): once with the meters along the feeder feeding the state
estimate (the scenarios' default), once with ``[estimation] enabled = false`` (the head meter's
one-factor picture, as before issue 13). The rig is the same varied feeder both times (same
seed): only what the controller does with its meters differs. Prints one JSON object with both
runs' KPIs per scenario and a Markdown table: DR compliance, voltage violations (bus-intervals
outside the band, from the rig's physics), and the RMS and largest error of the bus voltages
the controller dispatched on against the physics.

    .venv/bin/python benchmarks/scenarios_estimation.py [--compress F] [--scenario NAME ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bundled_runs import bundled_kpis

from controller.logs import configure_logging
from hil.scenario import BUNDLED_SCENARIOS

KEYS = (
    "dr_compliance",
    "voltage_violation_bus_intervals",
    "energy_over_limit_kwh",
    "curtailed_kwh",
    "estimate_v_rms_err_pu",
    "estimate_v_max_err_pu",
    "wall_s",
)


def _cell(value: Any, key: str) -> str:
    if value is None:
        return "n/a"
    if key == "dr_compliance":
        return f"{100 * value:.1f}%"
    if key.startswith("estimate_"):
        return f"{1000 * value:.2f}"
    return f"{value:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compress", type=float, default=1.0, help="timeline factor (0, 1]")
    parser.add_argument("--scenario", action="append", choices=BUNDLED_SCENARIOS, default=None)
    args = parser.parse_args()
    configure_logging(level="error", stream=sys.stderr)
    rows: dict[str, dict[str, Any]] = {}
    for name in args.scenario or BUNDLED_SCENARIOS:
        rows[name] = {
            "on": bundled_kpis(name, args.compress, KEYS, estimation=True),
            "off": bundled_kpis(name, args.compress, KEYS, estimation=False),
        }
        print(f"{name}: done", file=sys.stderr, flush=True)
    lines = [
        "| scenario | estimation | DR compliance | voltage violations, bus-intervals | "
        "voltage error RMS / max, mp.u. |",
        "|---|---|---|---|---|",
    ]
    for name, runs in rows.items():
        for mode in ("on", "off"):
            k = runs[mode]
            lines.append(
                f"| `{name}` | {mode} | {_cell(k['dr_compliance'], 'dr_compliance')} | "
                f"{_cell(k['voltage_violation_bus_intervals'], 'v')} | "
                f"{_cell(k['estimate_v_rms_err_pu'], 'estimate_')} / "
                f"{_cell(k['estimate_v_max_err_pu'], 'estimate_')} |"
            )
    print(json.dumps({"compress": args.compress, "scenarios": rows}))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
