"""Home Assistant discovery and the retained status, read back from a real broker.

The discovery configs are checked field by field, and their templates are rendered (jinja2, as
Home Assistant does) against the summary and health payloads that the publisher really sent, so
a sensor that reads a key nobody publishes fails here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
from mqtt_broker import Broker, Subscriber, read_retained, wait_until

from edge.config import HomeAssistantConfig, MqttConfig
from edge.mqtt import Outbox, Publisher, discovery_messages, health_message, summary_message
from edge.mqtt.discovery import HEALTH_SENSORS
from edge.store.db import Database

DEVICE = "trap-ha"
TAXA = ["Aglais io", "Noctua pronuba", "Lepidoptera", "Noctua  pronuba"]  # the last slugs like the second
STATUS = f"trapcam/{DEVICE}/status"
HEALTH = f"trapcam/{DEVICE}/health"
SUMMARY = f"trapcam/{DEVICE}/summary"
EXPECTED_HEALTH = {
    # key: (unit, device_class)
    "fps": ("fps", None),
    "inference_ms_p50": ("ms", "duration"),
    "disk_free_gb": ("GB", "data_size"),
    "cpu_temp_c": ("°C", "temperature"),
    "since_last_detection_s": ("s", "duration"),
}

pytestmark = pytest.mark.timeout(120)


def render(template: str, payload: dict[str, Any]) -> str:
    return jinja2.Environment().from_string(template).render(value_json=payload)


def cfg_for(broker: Broker | None = None, **kw: Any) -> MqttConfig:
    options: dict[str, Any] = {"enabled": True, "reconnect_backoff_s": (0.1, 0.5)}
    if broker is not None:
        options |= {"host": broker.host, "port": broker.port}
    return MqttConfig(**(options | kw))


def by_object(messages: list[Any]) -> dict[str, dict[str, Any]]:
    return {m.payload["object_id"]: m.payload for m in messages}


def test_discovery_configs_field_by_field() -> None:
    messages = discovery_messages(cfg_for(), DEVICE, "0.3.1", "inat-mobilenet-v2", TAXA)
    assert len(messages) == len(EXPECTED_HEALTH) + len(TAXA)
    device = {
        "identifiers": [f"trapcam_{DEVICE}"],
        "name": f"trapcam {DEVICE}",
        "manufacturer": "trapcam",
        "model": "inat-mobilenet-v2",
        "sw_version": "0.3.1",
    }
    for m in messages:
        p = m.payload
        assert (m.kind, m.qos, m.retain) == ("discovery", 1, True)
        assert m.topic == f"homeassistant/sensor/{DEVICE}/{p['object_id']}/config"
        assert p["unique_id"] == p["object_id"] and p["object_id"].startswith(f"trapcam_{DEVICE}_")
        assert p["availability_topic"] == STATUS
        assert p["availability_template"] == "{{ value_json.state }}"
        assert (p["payload_available"], p["payload_not_available"]) == ("online", "offline")
        assert p["device"] == device
        assert p["name"] and p["value_template"].startswith("{{")
        assert {"id", "device_id", "ts"} <= p.keys()
    assert len({m.payload["unique_id"] for m in messages}) == len(messages)
    assert len({m.topic for m in messages}) == len(messages)

    configs = by_object(messages)
    for key, (unit, device_class) in EXPECTED_HEALTH.items():
        p = configs[f"trapcam_{DEVICE}_{key}"]
        assert p["state_topic"] == HEALTH
        assert p["value_template"] == f"{{{{ value_json.{key} }}}}"
        assert p["unit_of_measurement"] == unit
        assert p.get("device_class") == device_class
        assert p["state_class"] == "measurement"
    today = [p for p in configs.values() if p["state_topic"] == SUMMARY]
    assert [p["name"] for p in today] == [f"{t} today" for t in TAXA]
    for p in today:
        assert p["state_class"] == "total_increasing"  # resets to 0 each day: HA starts a new cycle
        assert "unit_of_measurement" not in p and "device_class" not in p
    assert configs[f"trapcam_{DEVICE}_today_aglais_io"]["name"] == "Aglais io today"
    assert {s.key for s in HEALTH_SENSORS} == EXPECTED_HEALTH.keys()


def test_discovery_defaults_and_prefix() -> None:
    cfg = cfg_for(homeassistant=HomeAssistantConfig(discovery_prefix="ha"), topic_prefix="insects")
    messages = discovery_messages(cfg, DEVICE, "1.0", None, [])
    assert len(messages) == len(EXPECTED_HEALTH)
    assert all(m.topic.startswith(f"ha/sensor/{DEVICE}/") for m in messages)
    assert messages[0].payload["device"]["model"] == "insect camera trap"
    assert messages[0].payload["state_topic"] == f"insects/{DEVICE}/health"
    assert messages[0].payload["availability_topic"] == f"insects/{DEVICE}/status"


def test_templates_read_the_payloads_the_builders_make() -> None:
    configs = by_object(discovery_messages(cfg_for(), DEVICE, "1", None, TAXA))
    summary = summary_message("trapcam", DEVICE, {"today": {"Aglais io": 7, "Noctua  pronuba": 2}}).payload
    health = health_message(
        "trapcam",
        DEVICE,
        {
            "fps": 4.5,
            "inference_ms_p50": 38.2,
            "disk_free_gb": 12.25,
            "cpu_temp_c": 61.0,
            "since_last_detection_s": 90,
        },
    ).payload
    values = {
        p["name"]: render(p["value_template"], summary if p["state_topic"] == SUMMARY else health)
        for p in configs.values()
    }
    assert values["Aglais io today"] == "7"
    assert values["Noctua pronuba today"] == "0"  # not seen today: 0, not an error
    assert values["Noctua  pronuba today"] == "2"
    assert values["Frame rate"] == "4.5"
    assert values["Disk free"] == "12.25"
    assert values["Time since last detection"] == "90"
    status = {"state": "online"}
    assert render(next(iter(configs.values()))["availability_template"], status) == "online"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "trap.db", batch_size=50, flush_interval_s=0.05)
    yield database
    database.close()


def test_discovery_and_status_are_retained_on_the_broker_and_match_what_is_published(
    tmp_path: Path, db: Database
) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    cfg = cfg_for(broker)
    outbox = Outbox(db, cfg)
    expected = discovery_messages(cfg, DEVICE, "0.3.1", "m", TAXA)
    publisher = Publisher(
        cfg, DEVICE, outbox, discovery=lambda: discovery_messages(cfg, DEVICE, "0.3.1", "m", TAXA)
    )
    live = Subscriber(broker, [HEALTH, SUMMARY]).start()
    try:
        publisher.start()
        assert wait_until(lambda: publisher.state == "connected")
        retained = read_retained(broker, "homeassistant/#", expect=len(expected))
        assert sorted(m.topic for m in retained) == sorted(m.topic for m in expected)
        got = {m.topic: m.payload for m in retained}
        for m in expected:  # the same config, apart from the per-message id and time
            strip = {"id", "ts"}
            assert {k: v for k, v in got[m.topic].items() if k not in strip} == {
                k: v for k, v in m.payload.items() if k not in strip
            }
        status = read_retained(broker, STATUS)
        assert [s.payload["state"] for s in status] == ["online"]

        outbox.enqueue(summary_message("trapcam", DEVICE, {"today": {"Aglais io": 3}}))
        outbox.enqueue(health_message("trapcam", DEVICE, {"fps": 2.0, "cpu_temp_c": 55.5}))
        assert wait_until(lambda: len(live.snapshot()) >= 2)
        received = {m.topic: m.payload for m in live.snapshot()}
        values = {
            p["name"]: render(p["value_template"], received[p["state_topic"]])
            for p in got.values()
            if p["state_topic"] in received
        }
        assert len(values) == len(expected)  # every sensor's state_topic carried a message
        assert values["Aglais io today"] == "3"
        assert values["Frame rate"] == "2.0"
        assert values["CPU temperature"] == "55.5"
        summary_retained = read_retained(broker, SUMMARY)
        assert summary_retained[0].payload["today"] == {"Aglais io": 3}  # the summary is retained
        assert read_retained(broker, HEALTH, timeout=0.5) == []  # health is not
    finally:
        publisher.stop()
        live.stop()
    try:
        status = read_retained(broker, STATUS)
        assert [(s.payload["state"], s.payload["reason"]) for s in status] == [("offline", "stopped")]
        retained_status = json.dumps(status[0].payload)
        assert DEVICE in retained_status
    finally:
        broker.stop()


def test_home_assistant_disabled_publishes_no_discovery(tmp_path: Path, db: Database) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    cfg = cfg_for(broker, homeassistant=HomeAssistantConfig(enabled=False))
    publisher = Publisher(
        cfg, DEVICE, Outbox(db, cfg), discovery=lambda: discovery_messages(cfg, DEVICE, "1", None, TAXA)
    )
    try:
        publisher.start()
        assert wait_until(lambda: publisher.state == "connected")
        assert read_retained(broker, STATUS)[0].payload["state"] == "online"
        assert read_retained(broker, "homeassistant/#", timeout=0.5) == []
    finally:
        publisher.stop()
        broker.stop()
