"""DR events: the record and its validation, overlap resolution, the MQTT intake.

``controller.dr.service.DrService`` (decisions, persistence in the journal, the active limits)
is imported from its module: it depends on ``controller.journal``, which depends on this
package's records.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controller.dr.events import (
        Cancel,
        DrEvent,
        EventRejected,
        EventType,
        parse_payload,
    )
    from controller.dr.intake import (
        MqttIntake,
        MqttSettings,
        parse_mqtt_url,
    )
    from controller.dr.overlap import (
        StoredEvent,
        resolve,
    )

__all__ = [
    "Cancel",
    "DrEvent",
    "EventRejected",
    "EventType",
    "MqttIntake",
    "MqttSettings",
    "StoredEvent",
    "parse_mqtt_url",
    "parse_payload",
    "resolve",
]

# Loaded on first use, so that importing one part (say the journal) loads only what it needs.
_EXPORTS = {
    "Cancel": "controller.dr.events",
    "DrEvent": "controller.dr.events",
    "EventRejected": "controller.dr.events",
    "EventType": "controller.dr.events",
    "MqttIntake": "controller.dr.intake",
    "MqttSettings": "controller.dr.intake",
    "StoredEvent": "controller.dr.overlap",
    "parse_mqtt_url": "controller.dr.intake",
    "parse_payload": "controller.dr.events",
    "resolve": "controller.dr.overlap",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
