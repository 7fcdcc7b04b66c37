"""Home Assistant MQTT discovery: the trap's dashboard appears by itself.

Why these fields: Home Assistant creates one device ("trapcam <device_id>") with one sensor per
config message on `<discovery_prefix>/sensor/<device_id>/<object_id>/config` (retained, so HA
finds them after its own restart). The sensors read the topics the publisher really publishes:
today's count per taxon from the retained summary (`value_json.today`), the rest from the health
samples. Availability follows the retained status topic (and the broker's last will).

State classes follow the HA sensor docs: a count that rises during the day and restarts at 0 the
next day is `total_increasing` (a decrease starts a new cycle); readings of the present
(frame rate, inference time, free disk, temperature, time since the last detection) are
`measurement`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge.config import MqttConfig
from edge.errors import MqttError
from edge.mqtt.messages import Message, new_id, topic
from edge.store.schema import utc_iso, utc_now

MANUFACTURER = "trapcam"
DEFAULT_MODEL = "insect camera trap"


@dataclass(frozen=True)
class HealthSensor:
    """A sensor fed by one key of the health payload."""

    key: str
    name: str
    unit: str
    device_class: str | None
    icon: str


# The health payload keys the health sampler must publish (edge/mqtt is their reader).
HEALTH_SENSORS = (
    HealthSensor("fps", "Frame rate", "fps", None, "mdi:speedometer"),
    HealthSensor("inference_ms_p50", "Inference time (median)", "ms", "duration", "mdi:timer-outline"),
    HealthSensor("disk_free_gb", "Disk free", "GB", "data_size", "mdi:harddisk"),
    HealthSensor("cpu_temp_c", "CPU temperature", "°C", "temperature", "mdi:thermometer"),
    HealthSensor("since_last_detection_s", "Time since last detection", "s", "duration", "mdi:bug-outline"),
)


def slug(text: str) -> str:
    """Lower-case letters, digits and underscores: what HA allows in an object id."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


def discovery_topic(discovery_prefix: str, device_id: str, object_id: str) -> str:
    return f"{discovery_prefix.rstrip('/')}/sensor/{device_id}/{object_id}/config"


def discovery_messages(
    cfg: MqttConfig,
    device_id: str,
    software_version: str,
    model_name: str | None,
    taxa: Sequence[str],
) -> list[Message]:
    """One retained config message per sensor: the health sensors, then today's count per taxon."""
    prefix = cfg.homeassistant.discovery_prefix
    if not prefix or any(c in prefix for c in "#+"):
        raise MqttError(f"mqtt.homeassistant.discovery_prefix {prefix!r}: expected a topic without # or +")
    status_topic = topic(cfg.topic_prefix, device_id, "status")
    health_topic = topic(cfg.topic_prefix, device_id, "health")
    summary_topic = topic(cfg.topic_prefix, device_id, "summary")
    device = {
        "identifiers": [f"trapcam_{device_id}"],
        "name": f"trapcam {device_id}",
        "manufacturer": MANUFACTURER,
        "model": model_name or DEFAULT_MODEL,
        "sw_version": software_version,
    }
    common = {
        "availability_topic": status_topic,
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
    }
    configs: list[dict[str, Any]] = []
    for sensor in HEALTH_SENSORS:
        config = {
            "name": sensor.name,
            "object_id": f"trapcam_{device_id}_{sensor.key}",
            "unique_id": f"trapcam_{device_id}_{sensor.key}",
            "state_topic": health_topic,
            "value_template": f"{{{{ value_json.{sensor.key} }}}}",
            "unit_of_measurement": sensor.unit,
            "state_class": "measurement",
            "icon": sensor.icon,
            **common,
        }
        if sensor.device_class is not None:
            config["device_class"] = sensor.device_class
        configs.append(config)
    used: set[str] = set()
    for taxon in dict.fromkeys(taxa):  # keep order, drop repeats
        key = f"today_{slug(taxon)}"
        if key in used:  # two names with the same slug ('A-b', 'A b'): keep both, apart
            key = f"{key}_{hashlib.sha1(taxon.encode()).hexdigest()[:6]}"
        used.add(key)
        configs.append(
            {
                "name": f"{taxon} today",
                "object_id": f"trapcam_{device_id}_{key}",
                "unique_id": f"trapcam_{device_id}_{key}",
                "state_topic": summary_topic,
                "value_template": f"{{{{ value_json.today[{json.dumps(taxon)}] | default(0) }}}}",
                "state_class": "total_increasing",
                "icon": "mdi:bug",
                **common,
            }
        )
    ts = utc_iso(utc_now())
    messages = []
    for config in configs:
        object_id = config["object_id"]
        msg_id = new_id(device_id, "discovery")
        payload = {"id": msg_id, "device_id": device_id, "ts": ts, **config}
        messages.append(
            Message(msg_id, "discovery", discovery_topic(prefix, device_id, object_id), payload, 1, True)
        )
    return messages
