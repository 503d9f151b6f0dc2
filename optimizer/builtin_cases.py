"""Network cases shipped inside the package (the product never reads outside it)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["BUILTIN_CASES", "builtin_case"]

BUILTIN_CASES = {
    "case33bw": "IEEE 33-bus feeder (Baran & Wu 1989): 12.66 kV, 3.715 MW / 2.3 MVAr, "
    "202.7 kW of AC losses, 0.9131 p.u. at bus 18 with no DER",
}


def builtin_case(name: str) -> Path:
    """The MATPOWER file of a built-in case; ``KeyError`` names the known ones."""
    if name not in BUILTIN_CASES:
        raise KeyError(f"no built-in case {name!r} (known: {', '.join(sorted(BUILTIN_CASES))})")
    resource = resources.files("optimizer").joinpath("cases", f"{name}.m")
    if not isinstance(resource, Path) or not resource.is_file():
        raise FileNotFoundError(f"built-in case data is missing from the install: {resource}")
    return resource
