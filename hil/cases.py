"""The feeder cases the rig runs on: the optimizer's built-in network data."""

from __future__ import annotations

from pathlib import Path

from optimizer.builtin_cases import builtin_case

__all__ = ["case33bw_path"]


def case33bw_path() -> Path:
    """The IEEE 33-bus feeder (Baran & Wu 1989) as a MATPOWER case file.

    baseMVA 10, 12.66 kV, bus 1 the slack; 3.715 MW / 2.3 MVAr of load, 202.7 kW of AC losses and
    a minimum voltage of 0.9131 p.u. at bus 18 with no distributed generation.
    """
    return builtin_case("case33bw")
