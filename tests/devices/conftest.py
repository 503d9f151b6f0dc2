"""Fixtures of the device tests (defined in ``dev_helpers``)."""

from tests.devices.dev_helpers import certs, mosquitto, pty_pair

__all__ = ["certs", "mosquitto", "pty_pair"]
