"""Issue 14's before/after: the bundled scenarios on the varied rig, the model alone against
the closed loop with firm limits and reactive power, side by side.

Each bundled scenario runs through the same runner as ``feederd sim`` (the real daemon against
the varied HIL rig, simulated time, graded by the rig's pandapower physics) in three modes:

- ``model``: the dispatch's model alone, as before issue 14 (``[control]`` limit_correction,
  firm_limits, ramp_anticipation, reactive_power and volt_var_fallback all false);
- ``p_only``: the closed loop with firm limits and ramp anticipation, active power only;
- ``full``: the defaults (closed loop, firm limits, ramp anticipation, reactive power, the
  volt-var fallback).

Prints one JSON object with each run's KPIs and a Markdown table: DR compliance, the worst
excess over a limit after each event's first two intervals (% of the limit), the intervals
beyond the limit + 2% after each event's first, the energy over the limits (all, and after
each event's first interval), voltage violations (bus-intervals), curtailment (all, and
outside the DR events: for the voltage band alone) and the PV vars.

    .venv/bin/python benchmarks/control_quality.py [--compress F] [--scenario NAME ...]
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
    "worst_overshoot_pct",
    "intervals_over_after_first",
    "energy_over_limit_kwh",
    "energy_over_after_first_kwh",
    "voltage_violation_bus_intervals",
    "curtailed_kwh",
    "curtailed_outside_events_kwh",
    "pv_reactive_kvarh",
    "wall_s",
)
MODES: dict[str, dict[str, bool]] = {
    "model": {
        "limit_correction": False,
        "firm_limits": False,
        "ramp_anticipation": False,
        "reactive_power": False,
        "volt_var_fallback": False,
    },
    "p_only": {"reactive_power": False, "volt_var_fallback": False},
    "full": {},
}


def _cell(value: Any, key: str) -> str:
    if value is None:
        return "n/a"
    if key == "dr_compliance":
        return f"{100 * value:.1f}%"
    if key == "worst_overshoot_pct":
        return f"{value:.2f}%"
    return f"{value:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compress", type=float, default=1.0, help="timeline factor (0, 1]")
    parser.add_argument("--scenario", action="append", choices=BUNDLED_SCENARIOS, default=None)
    parser.add_argument("--mode", action="append", choices=tuple(MODES), default=None)
    args = parser.parse_args()
    configure_logging(level="error", stream=sys.stderr)
    rows: dict[str, dict[str, Any]] = {}
    modes = args.mode or list(MODES)
    for name in args.scenario or BUNDLED_SCENARIOS:
        rows[name] = {
            mode: bundled_kpis(name, args.compress, KEYS, control=MODES[mode]) for mode in modes
        }
        print(f"{name}: done", file=sys.stderr, flush=True)
    columns = KEYS[:-1]
    lines = [
        "| scenario | mode | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for name, runs in rows.items():
        for mode, k in runs.items():
            cells = " | ".join(_cell(k[key], key) for key in columns)
            lines.append(f"| `{name}` | {mode} | {cells} |")
    print(json.dumps({"compress": args.compress, "scenarios": rows}))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
