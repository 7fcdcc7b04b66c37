"""MQTT for the trap: messages go into a SQLite outbox first, a publisher thread drains it.

`messages` builds them, `outbox` stores and bounds them, `publisher` sends them (paho-mqtt, QoS 1,
retained status with a last will), `discovery` describes the trap to Home Assistant, and
`credentials` finds the broker password and keeps it out of the logs.
"""

from edge.mqtt.credentials import redact, resolve_password
from edge.mqtt.discovery import Discovery, SensorTaxa, discovery, discovery_messages
from edge.mqtt.messages import (
    Message,
    event_message,
    health_message,
    status_message,
    summary_message,
    topic,
    track_message,
)
from edge.mqtt.outbox import CompactReport, Outbox, OutboxRow
from edge.mqtt.publisher import Publisher

__all__ = [
    "CompactReport",
    "Discovery",
    "Message",
    "Outbox",
    "OutboxRow",
    "Publisher",
    "SensorTaxa",
    "discovery",
    "discovery_messages",
    "event_message",
    "health_message",
    "redact",
    "resolve_password",
    "status_message",
    "summary_message",
    "topic",
    "track_message",
]
