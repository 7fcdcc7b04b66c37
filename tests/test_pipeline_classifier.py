"""The loop with a real TFLite classifier: labels reach detections, tracks, crops and the runs table.

The models come from `modelkit` (built and converted with TensorFlow inside the test); their answer
is a known function of the crop's colour, so the test can say which label each insect must get.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import modelkit as mk
import numpy as np
import pytest
from helpers import query, synthetic_config

from edge.classify.bundle import sha256_file
from edge.config import ClassifierConfig
from edge.detect.base import Box
from edge.frames import Frame
from edge.pipeline import Pipeline
from edge.summary import print_run_summary


class _ColourPatches:
    """A replay source of frames with coloured squares on grey: a stand-in camera whose answer is known.

    Square i sits still at its own place with the colour of modelkit's species i, so the
    classifier's label for every track is known in advance.
    """

    name = "colour-patches"
    live = False

    def __init__(self, colours: list[tuple[int, int, int]], frames: int) -> None:
        from datetime import datetime, timedelta, timezone

        self.colours, self.frames, self.index = colours, frames, 0
        self.t0, self.dt = datetime(2026, 7, 1, 22, 0, tzinfo=timezone.utc), timedelta(seconds=5)
        self.boxes = [Box(60 + 150 * i, 120, 60 + 150 * i + 60, 180) for i in range(len(colours))]

    def open(self) -> None:
        self.index = 0

    def read(self) -> Frame | None:
        from edge.sources.base import EndOfStream

        if self.index >= self.frames:
            raise EndOfStream
        image = np.full((360, 150 * len(self.colours) + 120, 3), 200, np.uint8)
        if self.index >= 2:  # empty frames first: the static screen learns the background
            for (r, g, b), box in zip(self.colours, self.boxes, strict=True):
                image[box.y0 : box.y1, box.x0 : box.x1] = (b, g, r)
        frame = Frame(image, self.t0 + self.index * self.dt, "synthetic", self.index, f"patch-{self.index}")
        self.index += 1
        return frame

    def close(self) -> None:
        pass


def test_hierarchical_bundle_labels_every_level(tmp_path: Path) -> None:
    model = mk.hierarchical_model(size=32, quant="int8", io="uint8")
    bundle = mk.write_bundle(tmp_path / "bundle", model)
    species = mk.level_labels()["species"]
    colours = [mk.COLOURS[name] for name in ("red", "green", "blue")]
    expected = [species[list(mk.COLOURS).index(name)] for name in ("red", "green", "blue")]

    cfg = synthetic_config(tmp_path / "data", "detector:\n  min_area_px: 100\n")
    cfg.classifier = ClassifierConfig(enabled=True, model=bundle, num_threads=1, threshold=0.3)
    pipeline = Pipeline(cfg, source=_ColourPatches(colours, frames=12))
    result = pipeline.run()

    labels = sorted(t.label for t in result.confirmed_tracks)
    assert labels == sorted(expected)
    assert all(t.level == "species" for t in result.confirmed_tracks)

    db = cfg.database_path
    rows = query(db, "SELECT label, level, predictions_json, crop_path FROM detections")
    assert len(rows) == 3 * 10
    assert {r[0] for r in rows} == set(expected)
    predictions = json.loads(rows[0][2])
    assert list(predictions) == ["order", "family", "species"]
    tracks = query(db, "SELECT label, votes_json, best_detection_id FROM tracks WHERE status = 'ended'")
    assert sorted(t[0] for t in tracks) == sorted(expected)
    assert all(json.loads(t[1])["species"] for t in tracks)
    # The best detection of each track is stored and its crop is a real JPEG under a dated folder.
    for _, _, best in tracks:
        (crop_path,) = query(db, "SELECT crop_path FROM detections WHERE detection_id = ?", (best,))[0]
        assert crop_path.startswith("2026-07-01/")
        crop = cv2.imread(str(cfg.crops_path / crop_path))
        assert crop is not None and crop.shape == (32, 32, 3)
    # Only some detections keep a crop: the first and better-scored ones (not one per frame).
    assert 3 <= sum(r[3] is not None for r in rows) < len(rows)
    # The run records exactly which model produced these labels.
    assert query(db, "SELECT model_sha256 FROM runs") == [(sha256_file(bundle / "model.tflite"),)]


def test_plain_third_party_model_with_labels_txt(tmp_path: Path) -> None:
    model = mk.flat_model(size=32, quant="int8", io="uint8")
    path = mk.write_plain(tmp_path / "plain", model, label_style="index")
    labels = list(model.heads[0].labels)
    colours = [mk.COLOURS[name] for name in ("yellow", "cyan")]
    expected = [labels[list(mk.COLOURS).index(name)] for name in ("yellow", "cyan")]

    cfg = synthetic_config(tmp_path / "data", "detector:\n  min_area_px: 100\n")
    cfg.classifier = ClassifierConfig(enabled=True, model=path, num_threads=1, threshold=0.3)
    result = Pipeline(cfg, source=_ColourPatches(colours, frames=8)).run()
    assert sorted(t.label for t in result.confirmed_tracks) == sorted(expected)


def test_detection_rows_carry_the_boxes_the_detector_found(tmp_path: Path) -> None:
    """Boxes stored in SQLite are full-resolution boxes around the patches (not detection scale)."""
    cfg = synthetic_config(tmp_path / "data", "detector:\n  min_area_px: 100\n  detect_width: 320\n")
    source = _ColourPatches([(255, 0, 0)], frames=5)
    Pipeline(cfg, source=source).run()
    rows = query(cfg.database_path, "SELECT x0, y0, x1, y1 FROM detections")
    assert len(rows) == 3
    truth = source.boxes[0]
    for x0, y0, x1, y1 in rows:
        assert Box(x0, y0, x1, y1).iou(truth) > 0.8


def test_tracks_the_model_calls_background_are_kept_but_not_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Third-party models often have a 'background' class: such tracks are not insects."""
    model = mk.flat_model(size=32, quant="int8", io="uint8")
    path = mk.write_plain(tmp_path / "plain", model)
    labels = list(model.heads[0].labels)
    cyan = list(mk.COLOURS).index("cyan")
    labels[cyan] = "background"
    (tmp_path / "plain" / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")

    cfg = synthetic_config(tmp_path / "data", "detector:\n  min_area_px: 100\n")
    cfg.classifier = ClassifierConfig(
        enabled=True, model=path, num_threads=1, threshold=0.3, not_insect_labels=["background"]
    )
    colours = [mk.COLOURS["yellow"], mk.COLOURS["cyan"]]
    result = Pipeline(cfg, source=_ColourPatches(colours, frames=8)).run()

    assert [t.label for t in result.confirmed_tracks] == [labels[list(mk.COLOURS).index("yellow")]]
    assert result.not_insects == 1
    stored = query(cfg.database_path, "SELECT status, label FROM tracks WHERE hits > 1 ORDER BY status")
    assert stored == [("discarded", "background"), ("ended", labels[list(mk.COLOURS).index("yellow")])]
    assert query(cfg.database_path, "SELECT tracks_confirmed FROM runs") == [(1,)]

    # Off by default: the same night counts the "background" track like any other label.
    cfg.data_dir = tmp_path / "data-default"
    cfg.classifier = ClassifierConfig(enabled=True, model=path, num_threads=1, threshold=0.3)
    pipeline = Pipeline(cfg, source=_ColourPatches(colours, frames=8))
    result = pipeline.run()
    assert sorted(t.label for t in result.confirmed_tracks) == sorted(
        ["background", labels[list(mk.COLOURS).index("yellow")]]
    )
    assert result.not_insects == 0
    # the screen counts it as the exports do (DESIGN.md: unsure), and says what the model called it
    capsys.readouterr()
    print_run_summary(cfg, pipeline, result)
    screen = capsys.readouterr().out
    assert "      1  unsure (of them 1 the model called background)" in screen, screen
    assert not [line for line in screen.splitlines() if line.strip().endswith("  background")]


def test_a_bundle_trained_with_not_insect_crops_discards_what_it_calls_that(tmp_path: Path) -> None:
    """model.json's not_insect_label works without any config: the trained class is the decision."""
    model = mk.flat_model(size=32, quant="int8", io="uint8")
    bundle = mk.write_bundle(tmp_path / "bundle", model)
    cyan = list(mk.COLOURS).index("cyan")

    def declare(raw: dict) -> None:
        raw["outputs"][0]["labels"][cyan] = "not_insect"
        raw["not_insect_label"] = "not_insect"

    mk.edit_manifest(bundle, declare)
    cfg = synthetic_config(tmp_path / "data", "detector:\n  min_area_px: 100\n")
    cfg.classifier = ClassifierConfig(enabled=True, model=bundle, num_threads=1, threshold=0.3)
    colours = [mk.COLOURS["yellow"], mk.COLOURS["cyan"]]
    result = Pipeline(cfg, source=_ColourPatches(colours, frames=8)).run()

    yellow = model.heads[0].labels[list(mk.COLOURS).index("yellow")]
    assert [t.label for t in result.confirmed_tracks] == [yellow]
    assert result.not_insects == 1
    stored = query(
        cfg.database_path, "SELECT status, label, discard_reason FROM tracks WHERE hits > 1 ORDER BY status"
    )
    assert stored == [("discarded", "not_insect", "not_insect"), ("ended", yellow, None)]

    # without the declaration the same label is just a label, and counts
    mk.edit_manifest(bundle, lambda raw: raw.pop("not_insect_label"))
    cfg.data_dir = tmp_path / "data-undeclared"
    result = Pipeline(cfg, source=_ColourPatches(colours, frames=8)).run()
    assert sorted(t.label for t in result.confirmed_tracks) == sorted(["not_insect", yellow])


def test_every_storage_setting_reaches_the_database(tmp_path: Path) -> None:
    """Settings in the storage section are used, not silently dropped between config and writer."""
    cfg = synthetic_config(tmp_path / "data", "storage:\n  max_queue_items: 7\n  max_queue_mb: 3\n")
    pipeline = Pipeline(cfg, source=_ColourPatches([(255, 0, 0)], frames=2))
    try:
        assert pipeline.db._max_items == 7
        assert pipeline.db._max_bytes == 3 * 1024 * 1024
    finally:
        pipeline.db.close()
