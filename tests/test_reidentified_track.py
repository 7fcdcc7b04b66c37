"""A track re-identified after it was lost is one insect: one track message, counted once.

The video tracker holds a confirmed track that was missed for tracker.max_misses frames for
tracker.reid_window_s before it reports it ended; an insect that shows again at its place within
that window continues the same track. So the track's message goes out once, when the window has
passed, with the whole visit, and summaries and daily files count the insect once (`ended` is
final: no message ever needs a correction). Drawn frames replayed through the real pipeline, a
real mosquitto and a real SQLite file.
"""

from __future__ import annotations

import csv
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
from helpers import query
from mqtt_broker import Broker, Subscriber, wait_until
from test_detect import Camera, render_sheet

from edge.config import ExportConfig, SiteConfig, parse_config
from edge.export import export_days
from edge.pipeline import Pipeline

W, H = 640, 360
START = datetime(2026, 7, 1, 22, 0, tzinfo=timezone.utc)
DEVICE = "rev-1"


def _night(folder: Path) -> None:
    """A moth sits in frames 2-9, is away for 9 frames (45 s: longer than max_misses 5, shorter than
    reid_window_s 300 s) and sits at the same place again in frames 19-26."""
    folder.mkdir(parents=True)
    sheet = render_sheet(W, H, seed=3)
    camera = Camera(folder, seed=4, start=START)
    for n in range(30):
        scene = sheet.copy()
        if 2 <= n <= 9 or 19 <= n <= 26:
            cv2.ellipse(scene, (300, 170), (26, 14), 10, 0, 360, (40, 70, 120), -1)
            cv2.ellipse(scene, (300, 170), (18, 5), 10, 0, 360, (25, 40, 70), -1)
        camera.shoot(scene)


def test_a_reidentified_track_is_published_once_with_its_whole_visit_and_counted_once(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    _night(frames)
    with Broker(tmp_path / "broker") as broker:
        source = f"{{kind: folder, path: {frames}, timestamps: filename, filename_format: '%Y%m%d-%H%M%S'}}"
        config = (
            f"device_id: {DEVICE}\ndata_dir: {tmp_path / 'data'}\nsource: {source}\n"
            "storage: {save_crops: false}\nsummary: {interval_s: 60}\n"
            f"mqtt: {{enabled: true, host: {broker.host}, port: {broker.port}}}\n"
        )
        with Subscriber(broker, [f"trapcam/{DEVICE}/track"]) as sub:
            result = Pipeline(parse_config(config, "trap.yaml")).run()
            assert wait_until(lambda: len(sub.snapshot()) >= 1, timeout=20)
            time.sleep(1.0)  # a second message, if one were sent, arrives within this
            messages = [m.payload for m in sub.snapshot()]
    db = tmp_path / "data" / "trapcam.db"
    ended = query(db, "SELECT track_id, first_utc, last_utc FROM tracks WHERE status = 'ended'")
    assert len(ended) == 1 and list(result.finished_tracks) == [ended[0][0]], ended
    # the moth was really lost and re-identified (else this test would test nothing): both visits'
    # detections belong to the one track, across a gap longer than max_misses frames
    seen = [f for (f,) in query(db, "SELECT frame_index FROM detections WHERE track_id = ?", (ended[0][0],))]
    assert min(seen) <= 3 and max(seen) >= 25 and not any(10 <= f <= 18 for f in seen), seen
    # one message, sent when the track really ended (after the re-identification window), with the whole visit
    assert len(messages) == 1, messages
    assert (messages[0]["track_id"], messages[0]["last_utc"]) == (ended[0][0], ended[0][2])
    # summaries and the day's files count the insect once
    counted = query(db, "SELECT tracks, counts_json FROM summaries")
    assert sum(n for n, _ in counted) == 1
    assert sum(json.loads(c).get("unsure", {}).get("unsure", 0) for _, c in counted) == 1
    files = export_days(db, tmp_path / "export", [START.date()], SiteConfig(timezone="UTC"), ExportConfig())
    counts = next(p for p in files if p.name.startswith("counts_"))
    total = next(r for r in csv.DictReader(counts.open()) if r["level"] == "all")
    assert int(total["count"]) == 1
