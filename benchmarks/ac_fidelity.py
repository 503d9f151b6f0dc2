"""How close feederd's AC model is to an independent power flow, on every test feeder (issue 12).

For each feeder of ``tests/support/feeders.py`` (public networks through pandapower's MATPOWER
converter, the synthetic feeders, hand-made IEEE 33-bus variants) the file is written to a
temporary directory, solved by pandapower (``tests/support/reference.py``) and by feederd
(``load_matpower`` then ``solve_powerflow`` at the file's loads), and dispatched as
``feederd solve --synthetic-ders`` does it (80 % sun, and again at 20 %) to compare the LP's
estimates with feederd's AC power flow at the dispatched point. Prints one JSON object: per
feeder what the file holds, the reference's and feederd's losses and lowest voltage with their
errors (series losses; errors to three significant digits), the largest bus voltage error, the
LP's errors, and how much the file's charging and slack voltage move the reference (what an
engine ignoring them would miss). Targets: losses 0.5 %, voltages 0.001 p.u.; the LP 3 % and
0.005 p.u.

    .venv/bin/python benchmarks/ac_fidelity.py [--feeder NAME ...] [--lp-max-buses N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _pct(value: float, reference: float) -> float:
    return _sig(100.0 * (value - reference) / reference) if reference else 0.0


def _sig(value: float) -> float:
    """Three significant digits (errors are reported as found, down to round-off)."""
    return float(f"{value:.3g}")


def _lp(net: Any, pv_available: float) -> dict[str, Any]:
    """The LP's estimates against feederd's AC power flow at the point it dispatched, with DERs
    as `feederd solve --synthetic-ders` places them and `pv_available` of their rating."""
    from optimizer import solve_powerflow  # noqa: PLC0415
    from tests.support.feeders import dispatched_point  # noqa: PLC0415

    point = dispatched_point(net, pv_available=pv_available)
    res = point.result
    if not res.status.has_setpoints:
        return {"status": res.status.value, "message": res.message[:200]}
    ac = solve_powerflow(net, p_kw=point.p_kw, q_kvar=point.q_kvar)
    return {
        "status": res.status.value,
        "losses_kw": round(res.losses_kw, 3),
        "ac_losses_kw": round(ac.losses_kw, 3),
        "losses_err_pct": _pct(res.losses_kw, ac.losses_kw),
        "v_min_pu": round(res.v_min_pu, 5),
        "v_min_bus": res.v_min_bus,
        "v_min_err_pu": _sig(res.v_min_pu - ac.v_min_pu),
    }


def _effects(path: Path, work: Path, facts: dict[str, Any], ref: Any) -> dict[str, Any]:
    """How far the reference moves without the file's charging, and with its slack at 1 p.u."""
    from tests.support.feeders import variant  # noqa: PLC0415
    from tests.support.reference import reference  # noqa: PLC0415

    out: dict[str, Any] = {}
    if facts["charging_b_pu"] or facts["transformer_b_pu"]:
        bare = reference(variant(path, work / f"{path.stem}_no_b.m", charging=False))
        out["without_charging_losses_pct"] = _pct(bare.series_losses_kw, ref.series_losses_kw)
        out["without_charging_v_min_pu"] = _sig(bare.v_min_pu - ref.v_min_pu)
    if facts["slack_v_pu"] != 1.0:
        flat = reference(variant(path, work / f"{path.stem}_flat.m", slack_v_pu=1.0))
        out["slack_at_1pu_v_min_pu"] = _sig(flat.v_min_pu - ref.v_min_pu)
    return out


def bench_one(name: str, work: Path, *, lp_max_buses: int) -> dict[str, Any]:
    from optimizer import NetworkError, load_matpower, solve_powerflow  # noqa: PLC0415
    from tests.support.feeders import FEEDERS, summary  # noqa: PLC0415
    from tests.support.reference import reference  # noqa: PLC0415

    path = FEEDERS[name](work)
    facts = summary(path)
    ref = reference(path)
    row: dict[str, Any] = {
        "buses": facts["buses"],
        "has": {
            key: facts[key]
            for key in (
                "slack_v_pu",
                "charging_b_pu",
                "transformers",
                "transformer_b_pu",
                "taps",
                "shifts_deg",
                "shunts_gs_mw",
                "shunts_bs_mvar",
                "fixed_gens",
                "isolated_buses",
                "branches_out",
                "limits",
            )
        },
        "ref_losses_kw": round(ref.series_losses_kw, 3),
        "ref_v_min_pu": round(ref.v_min_pu, 5),
        "ref_v_min_bus": ref.v_min_bus,
    }
    try:
        net = load_matpower(path)
    except NetworkError as err:
        return row | {"error": str(err)[:300]}
    ours = solve_powerflow(net, p_kw=net.loads_kw, q_kvar=net.loads_kvar)
    common = set(ours.v_pu) & set(ref.v_pu)
    row |= {
        "converged": ours.converged,
        "losses_kw": round(ours.losses_kw, 3),
        "losses_err_pct": _pct(ours.losses_kw, ref.series_losses_kw),
        "v_min_pu": round(ours.v_min_pu, 5),
        "v_min_err_pu": _sig(ours.v_min_pu - ref.v_min_pu),
        "v_max_bus_err_pu": _sig(max(abs(ours.v_pu[b] - ref.v_pu[b]) for b in common)),
        "buses_missing": len(set(ref.v_pu) ^ set(ours.v_pu)),
    }
    if len(net.buses) <= lp_max_buses:
        row["lp"] = {f"pv{pv}": _lp(net, pv) for pv in (0.8, 0.2)}
    else:
        row["lp"] = f"skipped: more than {lp_max_buses} buses (--lp-max-buses)"
    return row | _effects(path, work, facts, ref)


def _worst(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The largest error of each kind over the feeders, and where."""
    out: dict[str, Any] = {}
    for key in ("losses_err_pct", "v_min_err_pu", "v_max_bus_err_pu"):
        found = [(abs(r[key]), n) for n, r in rows.items() if key in r]
        out[key] = max(found) if found else None
    for key in ("losses_err_pct", "v_min_err_pu"):
        found = [
            (abs(lp[key]), f"{n} {pv}")
            for n, r in rows.items()
            if isinstance(r.get("lp"), dict)
            for pv, lp in r["lp"].items()
            if key in lp
        ]
        out[f"lp_{key}"] = max(found) if found else None
    out["errors"] = sorted(n for n, r in rows.items() if "error" in r)
    return out


def main() -> None:
    sys.path.insert(0, str(ROOT))  # tests.support, from a checkout
    from tests.support.feeders import FEEDERS  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeder", action="append", choices=sorted(FEEDERS), default=None)
    parser.add_argument(
        "--lp-max-buses",
        type=int,
        default=5000,
        help="dispatch only feeders up to this size (default 5000)",
    )
    args = parser.parse_args()
    names = args.feeder or list(FEEDERS)
    with tempfile.TemporaryDirectory(prefix="ac_fidelity_") as tmp:
        rows = {name: bench_one(name, Path(tmp), lp_max_buses=args.lp_max_buses) for name in names}
    targets = {"losses_pct": 0.5, "v_pu": 0.001, "lp_losses_pct": 3.0, "lp_v_pu": 0.005}
    print(json.dumps({"targets": targets, "worst": _worst(rows), "feeders": rows}))


if __name__ == "__main__":
    main()
