"""feederd's optimizer: the feeder model, AC power flow and the LP dispatch. Pure: no I/O."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optimizer.builtin_cases import (
        BUILTIN_CASES,
        builtin_case,
    )
    from optimizer.dispatch import (
        Dispatcher,
    )
    from optimizer.estimation import (
        BadMeasurement,
        Measurement,
        MeasurementKind,
        StateEstimate,
        StateEstimator,
    )
    from optimizer.fallback import (
        proportional_curtailment,
    )
    from optimizer.forecast import (
        Forecast,
    )
    from optimizer.horizon import (
        HorizonSpec,
    )
    from optimizer.network import (
        Branch,
        Bus,
        Network,
        NetworkError,
        load_matpower,
        network_from_tables,
        write_matpower,
    )
    from optimizer.powerflow import (
        PowerFlowResult,
        solve_powerflow,
    )
    from optimizer.result import (
        DispatchResult,
        DispatchStatus,
    )
    from optimizer.session import (
        HighsSession,
    )
    from optimizer.synthetic import (
        SyntheticDers,
        synthetic_ders,
        synthetic_feeder,
    )
    from optimizer.units import (
        BatteryUnit,
        DispatchCosts,
        DispatchInput,
        FlexibleLoad,
        PvUnit,
    )

__all__ = [
    "BUILTIN_CASES",
    "BadMeasurement",
    "BatteryUnit",
    "Branch",
    "Bus",
    "DispatchCosts",
    "DispatchInput",
    "DispatchResult",
    "DispatchStatus",
    "Dispatcher",
    "FlexibleLoad",
    "Forecast",
    "HighsSession",
    "HorizonSpec",
    "Measurement",
    "MeasurementKind",
    "Network",
    "NetworkError",
    "PowerFlowResult",
    "PvUnit",
    "StateEstimate",
    "StateEstimator",
    "SyntheticDers",
    "builtin_case",
    "load_matpower",
    "network_from_tables",
    "proportional_curtailment",
    "solve_powerflow",
    "synthetic_ders",
    "synthetic_feeder",
    "write_matpower",
]

# Loaded on first use, so that importing one part (say the journal) loads only what it needs.
_EXPORTS = {
    "BUILTIN_CASES": "optimizer.builtin_cases",
    "BadMeasurement": "optimizer.estimation",
    "BatteryUnit": "optimizer.units",
    "Branch": "optimizer.network",
    "Bus": "optimizer.network",
    "DispatchCosts": "optimizer.units",
    "DispatchInput": "optimizer.units",
    "DispatchResult": "optimizer.result",
    "DispatchStatus": "optimizer.result",
    "Dispatcher": "optimizer.dispatch",
    "FlexibleLoad": "optimizer.units",
    "Forecast": "optimizer.forecast",
    "HighsSession": "optimizer.session",
    "HorizonSpec": "optimizer.horizon",
    "Measurement": "optimizer.estimation",
    "MeasurementKind": "optimizer.estimation",
    "Network": "optimizer.network",
    "NetworkError": "optimizer.network",
    "PowerFlowResult": "optimizer.powerflow",
    "PvUnit": "optimizer.units",
    "StateEstimate": "optimizer.estimation",
    "StateEstimator": "optimizer.estimation",
    "SyntheticDers": "optimizer.synthetic",
    "builtin_case": "optimizer.builtin_cases",
    "load_matpower": "optimizer.network",
    "network_from_tables": "optimizer.network",
    "proportional_curtailment": "optimizer.fallback",
    "solve_powerflow": "optimizer.powerflow",
    "synthetic_ders": "optimizer.synthetic",
    "synthetic_feeder": "optimizer.synthetic",
    "write_matpower": "optimizer.network",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
