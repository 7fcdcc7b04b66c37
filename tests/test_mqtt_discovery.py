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
import paho.mqtt.publish as paho_publish
import pytest
from mqtt_broker import Broker, Subscriber, read_retained, wait_until

from edge.config import HomeAssistantConfig, MqttConfig
from edge.errors import MqttError
from edge.mqtt import Outbox, Publisher, discovery, discovery_messages, health_message, summary_message
from edge.mqtt.discovery import HEALTH_SENSORS, SensorTaxa
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


def components(messages: list[Any]) -> dict[str, dict[str, Any]]:
    """The one device config's components by unique_id (after checking there is one message)."""
    assert len(messages) == 1
    return {c["unique_id"]: c for c in messages[0].payload["components"].values()}


def test_discovery_is_one_device_config_field_by_field() -> None:
    """Device-based discovery: device, origin and availability once, a component per sensor, each
    with unique_id and default_entity_id (object_id is deprecated in HA 2025.10, gone in 2026.4)."""
    messages = discovery_messages(cfg_for(), DEVICE, "0.3.1", "inat-mobilenet-v2", TAXA)
    (m,) = messages
    p = m.payload
    assert (m.kind, m.qos, m.retain) == ("discovery", 1, True)
    assert m.topic == "homeassistant/device/trapcam_trap-ha/config"
    assert p["device"] == {
        "identifiers": [f"trapcam_{DEVICE}"],
        "name": f"trapcam {DEVICE}",
        "manufacturer": "trapcam",
        "model": "inat-mobilenet-v2",
        "sw_version": "0.3.1",
    }
    assert p["origin"] == {"name": "trapcam", "sw_version": "0.3.1"}
    assert p["availability_topic"] == STATUS
    assert p["availability_template"] == "{{ value_json.state }}"
    assert (p["payload_available"], p["payload_not_available"], p["qos"]) == ("online", "offline", 1)
    assert p["device_id"] == DEVICE and "id" not in p and "ts" not in p  # the same bytes at every connect
    assert (
        m.payload_json()
        == discovery_messages(cfg_for(), DEVICE, "0.3.1", "inat-mobilenet-v2", TAXA)[0].payload_json()
    )
    # health, the total, each taxon, and the insects counted without one (unsure)
    assert len(p["components"]) == len(EXPECTED_HEALTH) + 1 + len(TAXA) + 1
    for key, c in p["components"].items():
        assert c["platform"] == "sensor" and "object_id" not in c
        assert c["unique_id"] == f"trapcam_{DEVICE}_{key}"  # unchanged from the per-sensor configs
        assert c["default_entity_id"] == f"sensor.trapcam_trap_ha_{key}"
        assert c["name"] and c["value_template"].startswith("{{")
        assert "device" not in c and "availability_topic" not in c  # given once, at the top

    configs = components(messages)
    for key, (unit, device_class) in EXPECTED_HEALTH.items():
        c = configs[f"trapcam_{DEVICE}_{key}"]
        assert c["state_topic"] == HEALTH
        assert c["value_template"] == f"{{{{ value_json.{key} }}}}"
        assert c["unit_of_measurement"] == unit
        assert c.get("device_class") == device_class
        assert c["state_class"] == "measurement"
    today = [c for c in configs.values() if c["state_topic"] == SUMMARY]
    assert [c["name"] for c in today] == [
        "Insects today",
        *[f"{t} today" for t in TAXA],
        "Unsure insects today",
    ]
    for c in today:
        assert c["state_class"] == "total_increasing"  # resets to 0 each day: HA starts a new cycle
        assert "unit_of_measurement" not in c and "device_class" not in c
    assert configs[f"trapcam_{DEVICE}_today_aglais_io"]["name"] == "Aglais io today"
    assert {s.key for s in HEALTH_SENSORS} == EXPECTED_HEALTH.keys()


def test_insects_counted_without_a_taxon_have_their_own_sensors_and_unknown_only_with_an_open_set() -> None:
    """DESIGN.md's outcome table: unsure and unknown insects count; without their sensors a dashboard's
    total would not add up. A taxon whose name slugs to an outcome's key keeps a key of its own."""
    plain = components(discovery_messages(cfg_for(), DEVICE, "1", None, ["Unsure"]))
    assert plain[f"trapcam_{DEVICE}_today_unsure"]["name"] == "Unsure insects today"
    assert f"trapcam_{DEVICE}_today_unknown" not in plain
    taxon = [c for c in plain.values() if c["name"] == "Unsure today"]
    assert len(taxon) == 1 and taxon[0]["unique_id"].startswith(f"trapcam_{DEVICE}_today_unsure_")
    assert taxon[0]["value_template"] == '{{ value_json.today["Unsure"] | default(0) }}'
    both = components(discovery_messages(cfg_for(), DEVICE, "1", None, [], ("unsure", "unknown")))
    unknown = both[f"trapcam_{DEVICE}_today_unknown"]
    assert unknown["name"] == "Unknown insects today" and unknown["state_topic"] == SUMMARY
    assert unknown["value_template"] == '{{ value_json.today["unknown"] | default(0) }}'
    assert unknown["state_class"] == "total_increasing"
    with pytest.raises(MqttError) as raised:
        discovery_messages(cfg_for(), DEVICE, "1", None, [], ("background",))
    assert str(raised.value) == "discovery outcomes ['background']: expected some of ['unsure', 'unknown']"


def test_discovery_defaults_prefix_and_the_legacy_topics_it_clears() -> None:
    cfg = cfg_for(homeassistant=HomeAssistantConfig(discovery_prefix="ha"), topic_prefix="insects")
    plan = discovery(cfg, "Trap 7.b", "1.0", None, ["Aglais io"])
    (m,) = plan.messages
    assert m.topic == "ha/device/trapcam_Trap_7_b/config"  # only [A-Za-z0-9_-] in a discovery topic id
    assert m.payload["device"]["model"] == "insect camera trap"
    assert m.payload["components"]["fps"]["state_topic"] == "insects/Trap 7.b/health"
    assert m.payload["availability_topic"] == "insects/Trap 7.b/status"
    # what trapcam up to this version retained per sensor: every one is cleared before the new config
    assert m.payload["components"]["fps"]["default_entity_id"] == "sensor.trapcam_trap_7_b_fps"
    assert plan.clear == [
        f"ha/sensor/Trap 7.b/trapcam_Trap 7.b_{k}/config" for k in [*EXPECTED_HEALTH, "today_aglais_io"]
    ]
    with pytest.raises(MqttError, match="discovery_prefix"):
        discovery(cfg_for(homeassistant=HomeAssistantConfig(discovery_prefix="ha/#")), DEVICE, "1", None, [])


def test_templates_read_the_payloads_the_builders_make() -> None:
    configs = components(discovery_messages(cfg_for(), DEVICE, "1", None, TAXA, ("unsure", "unknown")))
    today = {"Aglais io": 7, "Noctua  pronuba": 2, "unsure": 3, "unknown": 1}
    summary = summary_message("trapcam", DEVICE, {"today": today, "today_total": 13}).payload
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
        c["name"]: render(c["value_template"], summary if c["state_topic"] == SUMMARY else health)
        for c in configs.values()
    }
    assert values["Aglais io today"] == "7"
    assert values["Insects today"] == "13"  # the sum of what the dashboard shows
    assert (values["Unsure insects today"], values["Unknown insects today"]) == ("3", "1")
    assert values["Noctua pronuba today"] == "0"  # not seen today: 0, not an error
    assert values["Noctua  pronuba today"] == "2"
    assert values["Frame rate"] == "4.5"
    assert values["Disk free"] == "12.25"
    assert values["Time since last detection"] == "90"
    device = discovery_messages(cfg_for(), DEVICE, "1", None, TAXA)[0].payload
    assert render(device["availability_template"], {"state": "online"}) == "online"


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
    # what an earlier trapcam left retained: one config per sensor, which must not stay beside the new one
    legacy = f"homeassistant/sensor/{DEVICE}/trapcam_{DEVICE}_fps/config"
    paho_publish.single(
        legacy,
        json.dumps({"name": "Frame rate", "object_id": "x"}),
        retain=True,
        hostname=broker.host,
        port=broker.port,
    )
    assert [m.topic for m in read_retained(broker, "homeassistant/#")] == [legacy]
    publisher = Publisher(cfg, DEVICE, outbox, discovery=lambda: discovery(cfg, DEVICE, "0.3.1", "m", TAXA))
    live = Subscriber(broker, [HEALTH, SUMMARY]).start()
    try:
        publisher.start()
        assert wait_until(lambda: publisher.state == "connected")
        # the publisher sends the new config and clears the legacy one after it connects: read the
        # retained configs again until they are the new ones only (a busy machine showed the legacy
        # one still there on a first read); the legacy one never going fails here
        wanted = sorted(m.topic for m in expected)
        retained: list[Any] = []

        def only_the_new_configs() -> bool:
            retained[:] = read_retained(broker, "homeassistant/#", expect=len(expected))
            return sorted(m.topic for m in retained) == wanted

        assert wait_until(only_the_new_configs, timeout=15), [m.topic for m in retained]
        got = {m.topic: m.payload for m in retained}
        for m in expected:  # the same config, to the byte
            assert got[m.topic] == m.payload
        got = {c["unique_id"]: c for p in got.values() for c in p["components"].values()}
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
        assert len(values) == len(got)  # every sensor's state_topic carried a message
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
        cfg, DEVICE, Outbox(db, cfg), discovery=lambda: discovery(cfg, DEVICE, "1", None, TAXA)
    )
    try:
        publisher.start()
        assert wait_until(lambda: publisher.state == "connected")
        assert read_retained(broker, STATUS)[0].payload["state"] == "online"
        assert read_retained(broker, "homeassistant/#", timeout=0.5) == []
    finally:
        publisher.stop()
        broker.stop()


def test_sensor_taxa_listed_all_of_a_small_model_or_the_top_counted_of_a_large_one() -> None:
    """The iNaturalist model's 1,022 labels gave Home Assistant no count sensor at all."""
    big = [f"Species {i}" for i in range(1022)]
    assert SensorTaxa(["Aglais io"], big, 10).chosen() == ["Aglais io"]
    assert SensorTaxa([], TAXA, 10).chosen() == list(TAXA)
    top = SensorTaxa([], big, 2)
    assert top.by_count and top.chosen() == []
    top.seed({"Species 5": 3, "Species 9": 1, "background": 50, "unsure": 20})  # no taxon named: no sensor
    assert top.chosen() == ["Species 5", "Species 9"]
    assert top.add("Species 9") is False  # 3 and 2: the same two
    assert top.add("Species 7") is False  # 1: not in
    assert top.add("Species 7") is True  # 2, level with Species 9: the name decides, so the set is stable
    assert top.chosen() == ["Species 5", "Species 7"]
    assert top.add(None) is False and top.add("unsure") is False


def test_rediscover_sends_the_changed_config_while_connected(tmp_path: Path, db: Database) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    cfg = cfg_for(broker)
    taxa: list[str] = []
    publisher = Publisher(
        cfg, DEVICE, Outbox(db, cfg), discovery=lambda: discovery(cfg, DEVICE, "1", None, taxa)
    )
    try:
        publisher.start()
        assert wait_until(lambda: publisher.state == "connected")
        (first,) = read_retained(broker, "homeassistant/#", expect=1)
        assert (
            "today_total" in first.payload["components"]
            and "today_aglais_io" not in first.payload["components"]
        )
        taxa.append("Aglais io")  # a taxon entered the top counted ones
        publisher.rediscover()

        def announced() -> bool:
            retained = read_retained(broker, "homeassistant/#", expect=1, timeout=0.5)
            return bool(retained) and "today_aglais_io" in retained[0].payload["components"]

        assert wait_until(announced, timeout=10)
    finally:
        publisher.stop()
        broker.stop()
