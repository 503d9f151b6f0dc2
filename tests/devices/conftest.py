"""Fixtures of the device tests (defined in ``dev_helpers``)."""

from tests.devices.dev_helpers import certs, clock, mosquitto, pty_pair, rig

__all__ = ["certs", "clock", "mosquitto", "pty_pair", "rig"]
