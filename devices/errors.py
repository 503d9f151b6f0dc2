"""The project's device errors: library exceptions are translated into these at the edge.

Each carries its details as attributes (``device``, ``address``, ``point``, ``value``), and
``str()`` is the problem alone: whoever logs it names the device (``device=err.device``).
The controller decides what a failure means by its type, never by its wording:

- ``DeviceUnavailable``: no answer in time, or no connection (the device is missing);
- ``DeviceProtocolError``: an answer that cannot be right (an exception code, a model that
  moved); ``BadReading`` and its kinds are the answers whose values are unusable
  (``PointNotImplemented``, ``ImplausibleReading``): they are counted as bad readings;
- ``UnsafeWriteError``: the safety envelope refused a setpoint.
"""

from __future__ import annotations

__all__ = [
    "BadReading",
    "DeviceError",
    "DeviceProtocolError",
    "DeviceUnavailable",
    "ImplausibleReading",
    "PointNotImplemented",
    "UnsafeWriteError",
]


class DeviceError(Exception):
    """Base of every device-side error; ``device`` names the configured device."""

    def __init__(self, device: str, message: str) -> None:
        super().__init__(message)
        self.device = device
        self.message = message


class DeviceUnavailable(DeviceError):
    """The device did not answer in time, or the connection failed."""

    def __init__(self, device: str, message: str, *, address: int | None = None) -> None:
        super().__init__(device, message)
        self.address = address


class DeviceProtocolError(DeviceError):
    """The device answered, but with an exception code or content that cannot be right."""

    def __init__(self, device: str, message: str, *, address: int | None = None) -> None:
        super().__init__(device, message)
        self.address = address


class BadReading(DeviceProtocolError):
    """The device answered, but a value the reading needs is unusable: the reading is dropped
    and counted (``feederd_device_bad_readings_total``)."""

    def __init__(self, device: str, message: str, *, point: str) -> None:
        super().__init__(device, message)
        self.point = point


class PointNotImplemented(BadReading):
    """A point the reading needs holds SunSpec's "not implemented" value (or is not a number)."""

    def __init__(self, device: str, point: str) -> None:
        super().__init__(device, f"point {point} is not implemented or not a number", point=point)


class ImplausibleReading(BadReading):
    """A value outside what the device can physically do (``low``..``high``, in ``unit``)."""

    def __init__(
        self, device: str, *, point: str, value: float, low: float, high: float, unit: str
    ) -> None:
        super().__init__(
            device,
            f"implausible {point} = {value:.1f} {unit}, outside {low:.1f}..{high:.1f} {unit};"
            " reading dropped",
            point=point,
        )
        self.value = value
        self.low = low
        self.high = high
        self.unit = unit


class UnsafeWriteError(DeviceError):
    """The safety envelope refused a setpoint (not a number, or no writable control)."""
