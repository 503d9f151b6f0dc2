"""The project's device errors: library exceptions are translated into these at the edge."""

from __future__ import annotations

__all__ = ["DeviceError", "DeviceProtocolError", "DeviceUnavailable", "UnsafeWriteError"]


class DeviceError(Exception):
    """Base of every device-side error; ``device`` names the configured device."""

    def __init__(self, device: str, message: str) -> None:
        super().__init__(f"{device}: {message}")
        self.device = device


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


class UnsafeWriteError(DeviceError):
    """The safety envelope refused a setpoint (not a number, or no writable control)."""
