"""feederd's optimizer: the feeder model, AC power flow and the LP dispatch. Pure: no I/O."""

from optimizer.builtin_cases import BUILTIN_CASES, builtin_case
from optimizer.dispatch import Dispatcher
from optimizer.fallback import proportional_curtailment
from optimizer.forecast import Forecast
from optimizer.network import (
    Branch,
    Bus,
    Network,
    NetworkError,
    load_matpower,
    network_from_tables,
    write_matpower,
)
from optimizer.powerflow import PowerFlowResult, solve_powerflow
from optimizer.result import DispatchResult, DispatchStatus
from optimizer.session import HighsSession
from optimizer.synthetic import SyntheticDers, synthetic_ders, synthetic_feeder
from optimizer.units import BatteryUnit, DispatchCosts, DispatchInput, FlexibleLoad, PvUnit

__all__ = [
    "BUILTIN_CASES",
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
    "Network",
    "NetworkError",
    "PowerFlowResult",
    "PvUnit",
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
