"""The dispatch benchmarks of issues 3 and 15, as one table.

Runs ``feederd bench dispatch`` with DERs at every load bus (PV, a battery at every fifth) and
prints, per row: the LP's size, the first interval (building the LP and solving it from
scratch), the model build alone, the median and 95th percentile of the intervals that solved,
how many timed out or failed (never timed), a cold HiGHS solve of the same LP, peak memory, and
the row's target. The horizon rows run with the daemon's default (the full network on step 0,
the reduced tail model after) and, for honesty, with the full network on every step.

Targets (issue 15, on the 2-core box): the default 24 h multi-resolution horizon on the 33-bus
case, median under 50 ms; a 96-step horizon on the 33-bus case, median under half of EMHASS's
warm re-solve (``--emhass-ms``, 600 by default: EMHASS 0.18.7 re-solving its 288-step plan
here); a 1,000-bus feeder at 16 steps, median under 1 s, first build under 10 s, peak memory
under 600 MB; every interval solved.

    .venv/bin/python benchmarks/dispatch.py [--intervals N] [--emhass-ms X] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from optimizer import builtin_case

CASE33 = str(builtin_case("case33bw"))


def rows(emhass_ms: float) -> list[tuple[str, list[str], str]]:
    """(label, bench arguments, target) of every row."""
    half = emhass_ms / 2.0
    mr = ["--horizon-h", "24", "--fine-steps", "4", "--block-s", "900"]
    return [
        ("33-bus, 1 step", ["--case", CASE33], ""),
        ("33-bus, 24 h MR", ["--case", CASE33, *mr], "median < 50 ms"),
        ("33-bus, 24 h MR, full", ["--case", CASE33, *mr, "--network-steps", "all"], "(50 ms)"),
        ("33-bus, 96 steps", ["--case", CASE33, "--horizon", "96"], f"median < {half:.0f} ms"),
        (
            "33-bus, 96, full",
            ["--case", CASE33, "--horizon", "96", "--network-steps", "all"],
            f"({half:.0f} ms)",
        ),
        ("1000-bus, 1 step", ["--synthetic-feeder", "1000", "--seed", "1"], ""),
        (
            "1000-bus, 16 steps",
            ["--synthetic-feeder", "1000", "--seed", "1", "--horizon", "16"],
            "median < 1 s, build < 10 s, < 600 MB",
        ),
        (
            "1000-bus, 16, full",
            [
                *("--synthetic-feeder", "1000", "--seed", "1", "--horizon", "16"),
                *("--network-steps", "all", "--time-limit-s", "20", "--cold-runs", "0"),
            ],
            "(1 s)",
        ),
    ]


def bench(extra: list[str], intervals: int, emhass_ms: float) -> dict[str, Any]:
    """One ``feederd bench dispatch`` run in its own process (so its peak memory is its own)."""
    argv = [
        *("bench", "dispatch", *extra, "--synthetic-ders", "--intervals", str(intervals)),
        *("--compare-ms", str(emhass_ms), "--compare-label", "emhass"),
    ]
    code = f"import sys\nfrom controller.cli import main\nsys.exit(main({argv!r}))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"feederd {' '.join(argv)} exited {out.returncode}: {out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", type=int, default=30)
    parser.add_argument("--emhass-ms", type=float, default=600.0)
    parser.add_argument(
        "--quick", action="store_true", help="3 intervals for the full-network horizon rows"
    )
    args = parser.parse_args()
    head = (
        f"{'feeder':<24}{'steps':>6}{'net':>5}{'vars':>8}{'rows':>8}{'first ms':>10}"
        f"{'build ms':>10}{'median ms':>11}{'p95 ms':>10}{'failed':>8}{'cold ms':>10}"
        f"{'vs emhass':>10}{'RSS MB':>8}  target"
    )
    print(head)
    print("-" * len(head))
    for label, extra, target in rows(args.emhass_ms):
        full = "all" in extra
        intervals = 3 if full and (args.quick or "1000" in extra) else args.intervals
        r = bench(extra, intervals, args.emhass_ms)
        print(
            f"{label:<24}{r['horizon']:>6}{r['network_steps']:>5}{r['n_vars']:>8}"
            f"{r['n_cons']:>8}{r['build_ms']:>10.1f}{r['model_build_ms']:>10.1f}"
            f"{_ms(r['interval_ms_median']):>11}{_ms(r['interval_ms_p95']):>10}"
            f"{r['failures']:>5}/{r['intervals']:<2}{_ms(r['raw_highs_cold_ms']):>10}"
            f"{_ratio(r.get('vs_emhass')):>10}{r['peak_rss_mb']:>8.0f}  {target}"
        )


if __name__ == "__main__":
    run()
