"""The feeder cases the rig ships with, found inside the installed package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["case33bw_path"]


def case33bw_path() -> Path:
    """The IEEE 33-bus feeder (Baran & Wu 1989) as a MATPOWER case file.

    baseMVA 10, 12.66 kV, bus 1 the slack; 3.715 MW / 2.3 MVAr of load, 202.7 kW of AC losses and
    a minimum voltage of 0.9131 p.u. at bus 18 with no distributed generation.
    """
    resource = resources.files("hil").joinpath("data").joinpath("case33bw.m")
    if not isinstance(resource, Path):  # e.g. a zipped install: the rig needs a real file
        raise FileNotFoundError(f"hil case data is not on the file system: {resource}")
    if not resource.is_file():
        raise FileNotFoundError(f"hil case data is missing: {resource}")
    return resource
