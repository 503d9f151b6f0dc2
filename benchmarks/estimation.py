"""State estimation accuracy and speed (issue 13), graded against pandapower.

Per feeder (IEEE 33-bus; a seeded 1,000-bus synthetic feeder) and meter coverage (a P, Q, V
meter at every load bus, at every second one, the head meter only): over N seeded draws (each
load bus its own factor 0.3-1.7, meters with accuracy class noise, see
``tests/optimizer/estimation_scenarios.py``) the RMS and largest bus-voltage error of the
estimate against pandapower's AC power flow, and the time per ``estimate()`` call (median and
95th percentile of wall time over every call, and the median CPU time). Targets: RMS <= 0.002
p.u. (all), <= 0.004 p.u. (half); 1,000 buses with 1,000 meters under 50 ms per call.
Prints one JSON object.

    .venv/bin/python benchmarks/estimation.py [--draws N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _run(net: Any, draws: int, repeat: int) -> dict[str, Any]:
    from optimizer import StateEstimator  # noqa: PLC0415
    from tests.optimizer.estimation_scenarios import draw, errors, readings  # noqa: PLC0415

    est = StateEstimator(net)
    found: dict[str, dict[str, list[float]]] = {}
    states = [draw(net, seed) for seed in range(draws)]
    for seed, d in enumerate(states):
        for cover, buses in (("all", d.load_buses), ("half", d.load_buses[::2]), ("head", [])):
            ms = readings(d, buses, np.random.default_rng(1000 + seed))
            kw = {"pseudo_loads_kw": d.pseudo_kw, "pseudo_loads_kvar": d.pseudo_kvar}
            row = found.setdefault(cover, {"rms": [], "max": [], "wall": [], "cpu": []})
            row.setdefault("meters", []).append(float(len(buses)))
            for _ in range(repeat):
                wall, cpu = time.perf_counter(), time.process_time()
                result = est.estimate(ms, **kw)
                row["wall"].append(time.perf_counter() - wall)
                row["cpu"].append(time.process_time() - cpu)
            rms, worst = errors(result, d)
            row["rms"].append(rms)
            row["max"].append(worst)
    return {
        cover: {
            "meters": int(row["meters"][0]),
            "measurements": 3 * int(row["meters"][0]) + 3,
            "rms_pu_mean": round(float(np.mean(row["rms"])), 5),
            "rms_pu_worst": round(float(np.max(row["rms"])), 5),
            "max_pu_worst": round(float(np.max(row["max"])), 5),
            "ms_median": round(1e3 * float(np.median(row["wall"])), 2),
            "ms_p95": round(1e3 * float(np.percentile(row["wall"], 95)), 2),
            "cpu_ms_median": round(1e3 * float(np.median(row["cpu"])), 2),
        }
        for cover, row in found.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=5, help="seeded draws per feeder")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per draw and coverage")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))  # tests.optimizer, from a checkout
    from optimizer import builtin_case, load_matpower, synthetic_feeder  # noqa: PLC0415

    out = {
        "draws": args.draws,
        "feeders": {
            "case33bw": _run(load_matpower(builtin_case("case33bw")), args.draws, args.repeat),
            "synthetic1000": _run(synthetic_feeder(1000, seed=3), args.draws, args.repeat),
        },
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
