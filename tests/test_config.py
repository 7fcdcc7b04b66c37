"""The config schema: every error names file, line, key path, bad value and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import load_config, parse_config
from edge.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", ["demo.yaml", "light-trap.yaml", "flower-camera.yaml"])
def test_example_configs_are_valid(name: str) -> None:
    cfg = load_config(EXAMPLES / name)
    assert cfg.source.kind in ("synthetic", "picamera2")


def test_defaults_fill_in_and_paths_derive_from_data_dir() -> None:
    cfg = parse_config("data_dir: /data/t1\nsource: {kind: synthetic, seed: 3}\n")
    assert cfg.source.seed == 3
    assert cfg.database_path == Path("/data/t1/trapcam.db")
    assert cfg.crops_path == Path("/data/t1/crops")
    assert cfg.classifier.enabled is False


@pytest.mark.parametrize(
    ("text", "expected_parts"),
    [
        # a typo in a key: named with its line and the section it is in
        (
            "source: {kind: synthetic}\ndetector:\n  treshold: 3\n",
            ["x.yaml:3", "detector.treshold", "does not have (its value is not shown)", "no such key"],
        ),
        # unknown source kind: the kind key, its value and the choices
        ("source:\n  kind: webcam\n", ["x.yaml:2", "source.kind", "'webcam'", "'folder'"]),
        # a required key missing inside a union branch
        ("source:\n  kind: folder\n", ["x.yaml:1", "source.path", "required"]),
        # a number out of range
        (
            "source:\n  kind: synthetic\n  width: 20\n",
            ["x.yaml:3", "source.width", "got 20", "greater than or equal to 160"],
        ),
        # a wrong type
        (
            "source: {kind: synthetic}\ntracker:\n  max_misses: many\n",
            ["x.yaml:3", "tracker.max_misses", "'many'", "integer"],
        ),
        # cross-field rule
        (
            "source: {kind: synthetic}\nclassifier:\n  enabled: true\n",
            ["x.yaml:2", "classifier", "model is required"],
        ),
        (
            "source: {kind: synthetic}\ndetector:\n  min_area_px: 900\n  max_area_px: 100\n",
            ["detector", "min_area_px (900)"],
        ),
        # bad literal
        (
            "source: {kind: synthetic}\ndetector:\n  kind: yolo\n",
            ["x.yaml:3", "detector.kind", "'yolo'", "'motion'"],
        ),
        # an invalid device id (goes into MQTT topics later)
        ("device_id: 'trap one/1'\nsource: {kind: synthetic}\n", ["x.yaml:1", "device_id", "'trap one/1'"]),
        # not YAML at all
        ("source: [1, 2\n", ["x.yaml:2", "not valid YAML"]),
        ("", ["x.yaml", "empty"]),
        ("- a\n- b\n", ["x.yaml:1", "mapping"]),
        ("detector: {}\n", ["source", "required"]),
    ],
)
def test_bad_configs_give_one_clear_line(text: str, expected_parts: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.yaml")
    message = str(info.value)
    assert "\n" not in message
    for part in expected_parts:
        assert part in message, f"{part!r} missing from: {message}"


def test_several_errors_are_all_reported() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("source: {kind: synthetic}\ndetector:\n  foo: 1\ntracker:\n  bar: 2\n", "x.yaml")
    assert "detector.foo" in str(info.value) and "tracker.bar" in str(info.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("windows", "expected"),
    [
        ('[{start: "08:00", end: "18:00"}]', "00:00"),  # a day camera: the calendar day
        ("[{start: sunrise, end: sunset}]", "00:00"),
        ('[{start: "21:30", end: "05:00"}]', "12:00"),  # a night trap: one night, one file
        ("[{start: sunset, end: sunrise}]", "12:00"),
        ('[{start: "06:00", end: "09:00"}, {start: "20:00", end: "01:00"}]', "12:00"),  # one crosses midnight
    ],
)
def test_the_export_day_follows_the_schedule_unless_set(windows: str, expected: str) -> None:
    """A flower camera's 11:57 frames used to land in the previous day's file (days began at noon)."""
    head = "source: {kind: synthetic}\nsite: {latitude: 52.5, longitude: 13.4, timezone: Europe/Berlin}\n"
    cfg = parse_config(f"{head}schedule: {{windows: {windows}}}\n", "t.yaml")
    assert cfg.export.day_starts_at == expected
    explicit = parse_config(
        f"{head}schedule: {{windows: {windows}}}\nexport: {{day_starts_at: '06:00'}}\n", "t.yaml"
    )
    assert explicit.export.day_starts_at == "06:00"
    assert parse_config(head, "t.yaml").export.day_starts_at == "12:00"  # no schedule: a light trap's default
