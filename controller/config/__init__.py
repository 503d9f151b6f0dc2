"""The feederd configuration: one TOML file, validated by pydantic at the boundary.

``load_config`` returns plain validated models and the feeder network, or raises
``ConfigError`` whose message names the file, the key path and what is wrong, on one line.
The same path serves ``feederd check``, ``feederd run`` and a SIGHUP reload.

- ``errors``: ``ConfigError``;
- ``files``: bounded reading of what a config names (regular files, sizes, UTF-8, TOML);
- ``models``: the tables, every number bounded, a device's transport a tagged union;
- ``outlook``: ``[tariff]`` and ``[forecast]``, what the dispatch's horizon sees ahead;
- ``load``: ``parse_config`` and ``load_config``, and the checks across tables.
"""

from controller.config.errors import ConfigError
from controller.config.fields import MAX_KW
from controller.config.files import (
    CASE_MAX_BYTES,
    CONFIG_MAX_BYTES,
    SECRET_MAX_BYTES,
    FileRefused,
    check_regular_file,
    read_limited,
    resolve_path,
)
from controller.config.load import LoadedConfig, horizon_steps, load_config, parse_config
from controller.config.models import (
    TRANSPORT_TYPES,
    Config,
    ControlConfig,
    DeviceConfig,
    EstimationConfig,
    MetricsConfig,
    MqttTransport,
    PollConfig,
    RtuTransport,
    TcpTransport,
    TlsTransport,
)
from controller.config.outlook import ForecastConfig, TariffConfig, TariffPeriod

__all__ = [
    "CASE_MAX_BYTES",
    "CONFIG_MAX_BYTES",
    "MAX_KW",
    "SECRET_MAX_BYTES",
    "TRANSPORT_TYPES",
    "Config",
    "ConfigError",
    "ControlConfig",
    "DeviceConfig",
    "EstimationConfig",
    "FileRefused",
    "ForecastConfig",
    "LoadedConfig",
    "MetricsConfig",
    "MqttTransport",
    "PollConfig",
    "RtuTransport",
    "TariffConfig",
    "TariffPeriod",
    "TcpTransport",
    "TlsTransport",
    "check_regular_file",
    "horizon_steps",
    "load_config",
    "parse_config",
    "read_limited",
    "resolve_path",
]
