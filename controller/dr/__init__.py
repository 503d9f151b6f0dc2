"""DR events: the record and its validation, overlap resolution, the MQTT intake.

``controller.dr.service.DrService`` (decisions, persistence in the journal, the active limits)
is imported from its module: it depends on ``controller.journal``, which depends on this
package's records.
"""

from controller.dr.events import Cancel, DrEvent, EventRejected, EventType, parse_payload
from controller.dr.intake import MqttIntake, MqttSettings, parse_mqtt_url
from controller.dr.resolve import ActiveLimits, StoredEvent, resolve

__all__ = [
    "ActiveLimits",
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
