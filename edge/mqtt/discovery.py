"""Home Assistant MQTT discovery: the trap's dashboard appears by itself.

Why these fields: Home Assistant's device-based discovery (2024.11 and later) takes the whole trap
in one retained config on `<discovery_prefix>/device/trapcam_<device_id>/config`: the device
("trapcam <device_id>"), the origin (trapcam and its version), availability and QoS once, and one
component per sensor under `components`, each with its `unique_id` and a `default_entity_id`
(`sensor.trapcam_<device>_<key>`; the per-sensor `object_id` is deprecated since HA 2025.10 and
ignored from 2026.4). Retained, so HA finds it after its own restart. The sensors read the topics
the publisher really publishes: today's count per taxon from the retained summary
(`value_json.today`), the rest from the health samples. Availability follows the retained status
topic (and the broker's last will). Earlier trapcam versions retained one config per sensor on
`<prefix>/sensor/...`: the publisher clears those first (`Discovery.clear`), so no sensor exists
twice; the unique ids did not change, so HA keeps each entity's id and history.

State classes follow the HA sensor docs: a count that rises during the day and restarts at 0 the
next day is `total_increasing` (a decrease starts a new cycle); readings of the present
(frame rate, inference time, free disk, temperature, time since the last detection) are
`measurement`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge.classify.types import UNKNOWN, UNSURE, names_a_taxon
from edge.config import MqttConfig
from edge.errors import MqttError
from edge.mqtt.messages import Message, new_id, topic

# Home Assistant gets one "today" sensor per label only while that stays a dashboard, not a phone
# book (the iNaturalist model has 1,022 species): see SensorTaxa.
MAX_DISCOVERY_TAXA = 64
MANUFACTURER = "trapcam"
TOTAL_KEY = "today_total"  # the sensor every trap has: all insects counted today
DEFAULT_MODEL = "insect camera trap"
# Insects counted without a taxon (DESIGN.md's outcome table): their own "today" sensors, so the
# total is the sum of what the dashboard shows. `unknown` only for a model with an open set.
OUTCOME_SENSORS = {UNSURE: "Unsure insects today", UNKNOWN: "Unknown insects today"}


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


def device_object_id(device_id: str) -> str:
    """The discovery topic's id of this trap: letters, digits, '_' and '-' only (what HA allows there)."""
    return "trapcam_" + (re.sub(r"[^A-Za-z0-9_-]+", "_", device_id).strip("_") or "x")


def discovery_topic(discovery_prefix: str, device_id: str) -> str:
    """Device-based discovery: one config for the whole trap (HA 2024.11 and later)."""
    return f"{discovery_prefix.rstrip('/')}/device/{device_object_id(device_id)}/config"


def legacy_topic(discovery_prefix: str, device_id: str, key: str) -> str:
    """Where trapcam up to 0.x published one config per sensor (cleared now: see `Discovery`)."""
    return f"{discovery_prefix.rstrip('/')}/sensor/{device_id}/trapcam_{device_id}_{key}/config"


@dataclass(frozen=True)
class Discovery:
    """What the publisher sends to Home Assistant on every connect, in this order.

    clear: topics of the single-sensor configs that earlier trapcam versions retained; an empty
        retained payload removes each (and its entity, which HA restores under the same entity id
        from the device config that follows: same unique_id), so no sensor shows up twice.
    messages: the device config (retained).
    """

    clear: list[str]
    messages: list[Message]


class SensorTaxa:
    """Which taxa get a "today" sensor in Home Assistant.

    The ones the user lists (`mqtt.homeassistant.taxa`); else every label of a model with at most
    MAX_DISCOVERY_TAXA (a dashboard, not a phone book); else, for a model like the iNaturalist one
    (1,022 labels), the `top_taxa` labels counted most so far, which change as the season goes on.
    The total has its own sensor always (`TOTAL_KEY`).
    """

    def __init__(self, listed: Sequence[str], model_taxa: Sequence[str], top: int) -> None:
        self.fixed: list[str] | None = None
        if listed:
            self.fixed = list(dict.fromkeys(listed))
        elif len(model_taxa) <= MAX_DISCOVERY_TAXA:
            self.fixed = list(dict.fromkeys(model_taxa))
        self.top = top
        self.counts: Counter[str] = Counter()
        self._chosen = self._choose()

    @property
    def by_count(self) -> bool:
        """Whether the sensors follow the counts (no list, a large model)."""
        return self.fixed is None

    def seed(self, counts: Mapping[str, int]) -> None:
        """Counts from before this run (the database), so a restart keeps the same sensors."""
        for label, n in counts.items():
            if names_a_taxon(label):
                self.counts[label] += int(n)
        self._chosen = self._choose()

    def add(self, label: str | None) -> bool:
        """A finished track's label; True when the chosen taxa changed (discovery must be sent again)."""
        if self.fixed is not None or not names_a_taxon(label):
            return False
        assert label is not None
        self.counts[label] += 1
        chosen = self._choose()
        changed, self._chosen = chosen != self._chosen, chosen
        return changed

    def chosen(self) -> list[str]:
        return list(self._chosen)

    def _choose(self) -> list[str]:
        if self.fixed is not None:
            return self.fixed
        ranked = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        return sorted(label for label, _ in ranked[: self.top])  # sorted: a stable config


def _check_prefix(cfg: MqttConfig) -> str:
    prefix = cfg.homeassistant.discovery_prefix
    if not prefix or any(c in prefix for c in "#+"):
        raise MqttError(f"mqtt.homeassistant.discovery_prefix {prefix!r}: expected a topic without # or +")
    return prefix


def _sensor_keys(taxa: Sequence[str]) -> dict[str, str]:
    """taxon -> component key `today_<slug>`; two names with one slug ('A-b', 'A b') stay apart, and
    none takes an outcome sensor's key (a taxon called 'Unsure')."""
    keys: dict[str, str] = {}
    used: set[str] = {f"today_{outcome}" for outcome in OUTCOME_SENSORS}
    for taxon in dict.fromkeys(taxa):  # keep order, drop repeats
        key = f"today_{slug(taxon)}"
        if key in used:
            key = f"{key}_{hashlib.sha1(taxon.encode()).hexdigest()[:6]}"
        used.add(key)
        keys[taxon] = key
    return keys


def discovery(
    cfg: MqttConfig,
    device_id: str,
    software_version: str,
    model_name: str | None,
    taxa: Sequence[str],
    outcomes: Sequence[str] = (UNSURE,),
) -> Discovery:
    """The legacy topics to clear, then the device config (see `Discovery`)."""
    prefix = _check_prefix(cfg)
    keys = [s.key for s in HEALTH_SENSORS] + list(_sensor_keys(taxa).values())  # what earlier versions had
    return Discovery(
        [legacy_topic(prefix, device_id, k) for k in keys],
        discovery_messages(cfg, device_id, software_version, model_name, taxa, outcomes),
    )


def discovery_messages(
    cfg: MqttConfig,
    device_id: str,
    software_version: str,
    model_name: str | None,
    taxa: Sequence[str],
    outcomes: Sequence[str] = (UNSURE,),
) -> list[Message]:
    """The device config: one retained message, a component per sensor (health, the total, today's
    count per taxon, then per outcome without a taxon: `outcomes`, unsure and, for a model with an
    open set, unknown), the device, origin and availability given once for all of them."""
    prefix = _check_prefix(cfg)
    unknown_outcomes = [o for o in outcomes if o not in OUTCOME_SENSORS]
    if unknown_outcomes:
        raise MqttError(f"discovery outcomes {unknown_outcomes}: expected some of {list(OUTCOME_SENSORS)}")
    status_topic = topic(cfg.topic_prefix, device_id, "status")
    health_topic = topic(cfg.topic_prefix, device_id, "health")
    summary_topic = topic(cfg.topic_prefix, device_id, "summary")
    entity_base = device_object_id(device_id).lower().replace("-", "_")
    components: dict[str, dict[str, Any]] = {}
    for sensor in HEALTH_SENSORS:
        component: dict[str, Any] = {
            "platform": "sensor",
            "name": sensor.name,
            "unique_id": f"trapcam_{device_id}_{sensor.key}",
            "default_entity_id": f"sensor.{entity_base}_{sensor.key}",
            "state_topic": health_topic,
            "value_template": f"{{{{ value_json.{sensor.key} }}}}",
            "unit_of_measurement": sensor.unit,
            "state_class": "measurement",
            "icon": sensor.icon,
        }
        if sensor.device_class is not None:
            component["device_class"] = sensor.device_class
        components[sensor.key] = component
    components[TOTAL_KEY] = {
        "platform": "sensor",
        "name": "Insects today",
        "unique_id": f"trapcam_{device_id}_{TOTAL_KEY}",
        "default_entity_id": f"sensor.{entity_base}_{TOTAL_KEY}",
        "state_topic": summary_topic,
        "value_template": "{{ value_json.today_total | default(0) }}",
        "state_class": "total_increasing",
        "icon": "mdi:bug",
    }
    for taxon, key in _sensor_keys(taxa).items():
        components[key] = {
            "platform": "sensor",
            "name": f"{taxon} today",
            "unique_id": f"trapcam_{device_id}_{key}",
            "default_entity_id": f"sensor.{entity_base}_{key}",
            "state_topic": summary_topic,
            "value_template": f"{{{{ value_json.today[{json.dumps(taxon)}] | default(0) }}}}",
            "state_class": "total_increasing",
            "icon": "mdi:bug",
        }
    for outcome in OUTCOME_SENSORS:
        if outcome not in outcomes:
            continue
        key = f"today_{outcome}"
        components[key] = {
            "platform": "sensor",
            "name": OUTCOME_SENSORS[outcome],
            "unique_id": f"trapcam_{device_id}_{key}",
            "default_entity_id": f"sensor.{entity_base}_{key}",
            "state_topic": summary_topic,
            "value_template": f"{{{{ value_json.today[{json.dumps(outcome)}] | default(0) }}}}",
            "state_class": "total_increasing",
            "icon": "mdi:help-circle-outline",
        }
    # No message id or time stamp in the payload: the same config is the same bytes at every connect,
    # so Home Assistant does not process an unchanged device again.
    payload = {
        "device_id": device_id,
        "device": {
            "identifiers": [f"trapcam_{device_id}"],
            "name": f"trapcam {device_id}",
            "manufacturer": MANUFACTURER,
            "model": model_name or DEFAULT_MODEL,
            "sw_version": software_version,
        },
        "origin": {"name": "trapcam", "sw_version": software_version},
        "availability_topic": status_topic,
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": 1,
        "components": components,
    }
    msg_id = new_id(device_id, "discovery")  # the outbox's own id, never published
    return [Message(msg_id, "discovery", discovery_topic(prefix, device_id), payload, 1, True)]
