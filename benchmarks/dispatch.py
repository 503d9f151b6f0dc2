"""The dispatch benchmarks of issue 3, as one table.

Runs ``feederd bench dispatch`` on the IEEE 33-bus case (one interval and a 24-step horizon)
and on a seeded 1,000-bus synthetic radial feeder, all with DERs at every load bus, and prints
build time, per-interval median and 95th percentile, a cold HiGHS solve of the same LP and the
ratio (targets: ratio <= 1.0, aim 0.5; 1,000-bus interval well under 1 s; 33-bus 24-step
horizon under 1 s).

    .venv/bin/python benchmarks/dispatch.py [--intervals N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from typing import Any

from controller.cli import main
from optimizer import builtin_case

RUNS = (
    ("33-bus", ["--case", str(builtin_case("case33bw"))]),
    ("33-bus, 24 steps", ["--case", str(builtin_case("case33bw")), "--horizon", "24"]),
    ("1000-bus", ["--synthetic-feeder", "1000", "--seed", "1"]),
)


def bench(extra: list[str], intervals: int) -> dict[str, Any]:
    out = io.StringIO()
    argv = ["bench", "dispatch", *extra, "--synthetic-ders", "--intervals", str(intervals)]
    with contextlib.redirect_stdout(out):
        code = main(argv)
    if code != 0:
        raise SystemExit(f"feederd {' '.join(argv)} exited {code}")
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", type=int, default=30)
    args = parser.parse_args()
    head = (
        f"{'feeder':<18}{'vars':>7}{'rows':>7}{'build ms':>10}{'median ms':>11}"
        f"{'p95 ms':>9}{'cold ms':>9}{'ratio':>7}"
    )
    print(head)
    print("-" * len(head))
    for label, extra in RUNS:
        r = bench(extra, args.intervals)
        print(
            f"{label:<18}{r['n_vars']:>7}{r['n_cons']:>7}{r['build_ms']:>10.1f}"
            f"{r['interval_ms_median']:>11.1f}{r['interval_ms_p95']:>9.1f}"
            f"{r['raw_highs_cold_ms']:>9.1f}{r['ratio']:>7.2f}"
        )


if __name__ == "__main__":
    run()
