"""Time-lapse traps: snapshots minutes apart must count, and a run that counts nothing must say why.

A trap that photographs the sheet every few minutes gave 0 insects on real AMI snapshots: every
detection was a one-frame track, discarded as noise, silently. Here: the synthetic time-lapse
night (`SceneParams.snapshot_every`, what `trapcam synth --snapshot-every` writes), the tracker's
`mode: timelapse`, and the run's own explanation when it counted nothing, on JPEG files written in
the test and replayed through the real pipeline into a real SQLite file.
"""

from __future__ import annotations

import io
import sqlite3
from contextlib import redirect_stdout
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from helpers import query
from test_tracker import BROWN, GREEN, Run, appearance_descriptor, box_at, crop_of

from edge.config import TIMELAPSE_DEFAULTS, VIDEO_DEFAULTS, TrackerConfig, parse_config
from edge.detect.base import Detection
from edge.evaluation.ground_truth import load_ground_truth
from edge.evaluation.run import evaluate_frames, isolated_config
from edge.pipeline import Pipeline
from edge.summary import print_run_summary
from edge.synth.scene import SceneParams, SyntheticNight
from edge.synth.writer import write_night
from edge.track.tracker import Tracker, TrackInput

SNAPSHOT_S = 600


def _night(seed: int = 4) -> SyntheticNight:
    """Snapshots 10 minutes apart (5 s behaviour steps): a few insects visible in each."""
    return SyntheticNight(
        SceneParams(
            width=640, height=360, frames=16, frame_interval_s=5, snapshot_every=120, insects=14, seed=seed
        )
    )


def test_a_synthetic_time_lapse_night_is_snapshots_of_a_simulated_night() -> None:
    night = _night()
    assert [(night.timestamp(i) - night.timestamp(0)).total_seconds() for i in range(3)] == [0, 600, 1200]
    truth = [night.ground_truth(i) for i in range(len(night))]
    seen = {o.insect_id for frame in truth for o in frame}
    # the ground truth counts exactly the insects seen in some snapshot, each visit spanning its frames
    visits = night.visits
    assert {v.insect_id for v in visits} == seen and sum(night.ground_truth_counts().values()) == len(seen)
    for v in visits:
        frames = [i for i, frame in enumerate(truth) if any(o.insect_id == v.insect_id for o in frame)]
        assert (frames[0], frames[-1] + 1) == (v.arrival_frame, v.departure_frame)
    assert len(visits) < 14 or all(v.departure_frame - v.arrival_frame >= 1 for v in visits)
    # several insects are seen in more than one snapshot (sitters), and some moved in between
    assert sum(1 for v in visits if v.departure_frame - v.arrival_frame > 1) >= 3
    moved = [o for frame in truth[1:] for o in frame if o.moving]
    assert moved, "no insect moved between snapshots: the night tests no linking"
    # rendering agrees with the ground truth it reports
    image, rendered = night.render(5)
    assert image.shape == (360, 640, 3) and rendered == sorted(truth[5], key=lambda o: o.insect_id)
    with pytest.raises(Exception, match="snapshot_every"):
        SceneParams(snapshot_every=0)


def test_timelapse_mode_changes_only_the_defaults_the_config_leaves_unset() -> None:
    video = TrackerConfig().effective()
    assert {k: getattr(video, k) for k in VIDEO_DEFAULTS} == VIDEO_DEFAULTS
    timelapse = TrackerConfig(mode="timelapse").effective()
    assert {k: getattr(timelapse, k) for k in TIMELAPSE_DEFAULTS} == TIMELAPSE_DEFAULTS
    mine = TrackerConfig(mode="timelapse", confirm_hits=2, max_distance=1.5).effective()
    assert (mine.confirm_hits, mine.max_distance, mine.max_misses) == (
        2,
        1.5,
        TIMELAPSE_DEFAULTS["max_misses"],
    )
    # the mode survives a round trip through a dump (runs.config_json, evaluate's isolated config)
    again = TrackerConfig.model_validate(TrackerConfig(mode="timelapse").model_dump()).effective()
    assert again.confirm_hits == TIMELAPSE_DEFAULTS["confirm_hits"]


def test_timelapse_tracker_keeps_a_sitter_counts_every_snapshot_insect_and_splits_far_look_alikes() -> None:
    brown = appearance_descriptor(crop_of(BROWN, 1))
    run = Run(TrackerConfig(mode="timelapse"), interval_s=SNAPSHOT_S)
    # a moth that sits through ten snapshots, shifting a little, and one missed snapshot in between
    for n in range(10):
        boxes = {} if n == 4 else {"sitter": box_at(100 + 3 * n, 100, 40, 30)}
        run.step(boxes, appearance={"sitter": brown})
    run.finish()
    assert len(run.counted()) == 1 and len(set(run.ids["sitter"])) == 1
    # one snapshot: all three insects count at once (a video tracker would wait for a second frame)
    run = Run(TrackerConfig(mode="timelapse"), interval_s=SNAPSHOT_S)
    run.step({"a": box_at(100, 100), "b": box_at(300, 100), "c": box_at(500, 100)})
    run.finish()
    assert len(run.counted()) == 3
    video = Run(TrackerConfig(), interval_s=SNAPSHOT_S)
    video.step({"a": box_at(100, 100), "b": box_at(300, 100), "c": box_at(500, 100)})
    video.finish()
    assert video.counted() == []
    # two look-alikes far apart, one per snapshot: two insects, not one that jumped
    run = Run(TrackerConfig(mode="timelapse"), interval_s=SNAPSHOT_S)
    run.step({"left": box_at(100, 100)}, appearance={"left": brown})
    run.step({"right": box_at(600, 300)}, appearance={"right": appearance_descriptor(crop_of(BROWN, 2))})
    run.finish()
    assert len(run.counted()) == 2
    # a walker that moved two body lengths between snapshots, of its own colours: still one
    green = appearance_descriptor(crop_of(GREEN, 3))
    run = Run(TrackerConfig(mode="timelapse"), interval_s=SNAPSHOT_S)
    for n in range(4):
        run.step({"walker": box_at(100 + 90 * n, 100, 40, 30)}, appearance={"walker": green})
    run.finish()
    assert len(run.counted()) == 1


def test_timelapse_links_by_the_model_embedding_where_colours_cannot_tell_insects_apart() -> None:
    """Two brown moths of one colour: the same place in two snapshots is the same insect only if
    the model's features agree (a different moth that landed where one left is a new count)."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=64), rng.normal(size=64)  # features of two different insects
    brown_1, brown_2 = appearance_descriptor(crop_of(BROWN, 1)), appearance_descriptor(crop_of(BROWN, 2))

    def night(second: np.ndarray, mode: str = "timelapse") -> int:
        tracker = Tracker(TrackerConfig(mode=mode, confirm_hits=1))
        t0 = datetime(2026, 7, 1, 22, 0, tzinfo=timezone.utc)
        box = box_at(200, 200, 60, 40)
        for n, (embedding, colour) in enumerate(
            [(a, brown_1), (a + 0.05 * rng.normal(size=64), brown_1), (second, brown_2)]
        ):
            item = TrackInput(Detection(box, box.area, 1.0), n + 1, appearance=colour, embedding=embedding)
            tracker.update(t0 + timedelta(seconds=SNAPSHOT_S * n), [item])
        ended = tracker.finish(t0 + timedelta(seconds=SNAPSHOT_S * 3))
        return sum(1 for t in ended if t.status == "ended")

    assert night(a + 0.05 * rng.normal(size=64)) == 1  # the same moth, sitting
    assert night(b) == 2  # another moth of the same colour in its place
    # video mode keeps to colours and place (frames seconds apart: the features are not needed)
    assert night(b, mode="video") == 1


def _config(tmp_path: Path, frames: Path, data: str, mode: str | None) -> str:
    tracker = f"tracker: {{mode: {mode}}}\n" if mode else ""
    return (
        f"data_dir: {tmp_path / data}\n"
        f"source: {{kind: folder, path: {frames}, timestamps: filename, filename_format: '%Y%m%d-%H%M%S'}}\n"
        f"classifier: {{enabled: false}}\nstorage: {{save_crops: false}}\n{tracker}"
    )


def test_snapshots_far_apart_count_in_timelapse_mode_and_the_video_tracker_says_why_it_counted_none(
    tmp_path: Path,
) -> None:
    night = _night()
    frames = write_night(night, tmp_path / "night")
    true = sum(night.ground_truth_counts().values())
    # the video tracker: nothing counted, and the run says why, on screen and in health
    cfg = parse_config(_config(tmp_path, frames, "video", None), "trap.yaml")
    pipeline = Pipeline(cfg)
    result = pipeline.run()
    assert result.detections > 0 and not result.finished_tracks
    assert result.longest_gap_s == pytest.approx(SNAPSHOT_S)
    reason = result.why_nothing_counted(cfg.tracker)
    assert reason is not None and "600 s apart" in reason and "tracker.mode: timelapse" in reason
    screen = io.StringIO()
    with redirect_stdout(screen):
        print_run_summary(cfg, pipeline, result)
    assert f"nothing counted: {reason}" in screen.getvalue()
    statuses = [s for (s,) in query(tmp_path / "video" / "trapcam.db", "SELECT status FROM health")]
    assert any("frames-too-far-apart" in s for s in statuses), statuses
    # time-lapse mode: the insects count, close to the truth (on this small 640 px night of 16
    # snapshots, 16 for 14: walkers that moved far between snapshots; bench.timelapse_counts
    # measures larger nights)
    cfg = parse_config(_config(tmp_path, frames, "timelapse", "timelapse"), "trap.yaml")
    truth = load_ground_truth(frames, "synthetic")
    report, result = evaluate_frames(isolated_config(cfg, tmp_path / "eval"), truth)
    assert report.tracking is not None and report.tracking.true_count == true
    assert abs(report.tracking.counted - true) <= max(2, 0.2 * true), (report.tracking.counted, true)
    assert result.why_nothing_counted(cfg.tracker) is None
    # frames close together never raise the warning
    assert TrackerConfig().effective().max_gap_s == VIDEO_DEFAULTS["max_gap_s"] < SNAPSHOT_S
    assert timedelta(seconds=SNAPSHOT_S) == night.timestamp(1) - night.timestamp(0)


def test_what_ecologists_read_from_snapshots_reaches_the_tables_the_csv_and_the_summary_message(
    tmp_path: Path,
) -> None:
    """Per snapshot the insects seen (snapshots table, snapshots CSV), per interval the most at once
    (summaries.max_insects, MQTT summary), per day the most at once next to the linked individuals."""
    import csv

    from edge.config import ExportConfig, SiteConfig
    from edge.export.daily import export_days
    from edge.intervals import summary_from_db

    night = _night(seed=6)
    frames = write_night(night, tmp_path / "night")
    truth = [len(night.ground_truth(i)) for i in range(len(night))]
    cfg = parse_config(_config(tmp_path, frames, "data", "timelapse"), "trap.yaml")
    result = Pipeline(cfg).run()
    db = tmp_path / "data" / "trapcam.db"
    rows = query(db, "SELECT frame_index, insects, counts_json FROM snapshots ORDER BY frame_index")
    assert [r[0] for r in rows] == list(range(len(night)))  # every snapshot, empty ones too
    seen = [r[1] for r in rows]
    # one per track seen in the frame (pieces of one insect once), frames without insects too
    per_frame = dict(
        query(db, "SELECT frame_index, COUNT(DISTINCT track_id) FROM detections GROUP BY frame_index")
    )
    assert seen == [per_frame.get(i, 0) for i in range(len(night))]
    # (the default detector misses the 13 px ladybirds of this 640 px night: below min_area_px)
    assert sum(seen) >= 0.7 * sum(truth) and max(seen) >= 3, (seen, truth)
    import json

    for _, insects, counts in rows:
        counts = json.loads(counts)
        assert sum(counts.get("unsure", {}).values()) == insects  # no classifier: every crop unsure
        assert sum(counts.get("size_class", {}).values()) == insects
    # summaries: the most insects at once in each interval, and in the MQTT summary message
    summaries = [summary_from_db(r) for r in query_rows(db, "SELECT * FROM summaries ORDER BY start_utc")]
    assert summaries and max(s.max_insects or 0 for s in summaries) == max(seen)
    payload = summaries[0].to_payload({})
    assert payload["max_insects"] == summaries[0].max_insects
    # the day's files: linked individuals and the most at once; one row per snapshot and taxon
    day = night.timestamp(0).date()
    written = export_days(db, tmp_path / "export", [day], SiteConfig(timezone="UTC"), ExportConfig())
    by_name = {p.name.split("_")[0]: p for p in written}
    assert set(by_name) == {"counts", "tracks", "snapshots"}
    counts_rows = list(csv.DictReader(by_name["counts"].open()))
    total = next(r for r in counts_rows if r["level"] == "all")
    assert int(total["count"]) == len(result.finished_tracks) and int(total["max_per_snapshot"]) == max(seen)
    snaps = [r for r in csv.DictReader(by_name["snapshots"].open()) if r["level"] == "all"]
    assert [int(r["count"]) for r in snaps] == seen


def query_rows(db: Path, sql: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_camera_set_up_for_snapshots_gets_the_advice_before_its_first_frame(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot camera's first long gap may be an hour away: the advice comes from the config at start,
    from `trapcam validate-config` too, and health carries it from the first sample."""
    from test_run_cli import trapcam

    from edge.config import timelapse_advice

    source = "{kind: synthetic, width: 320, height: 180, frames: 3, insects: 0, snapshot_every: 120}"
    text = f"data_dir: {tmp_path / 'data'}\nsource: {source}\nclassifier: {{enabled: false}}\n"
    cfg = parse_config(text, "trap.yaml")
    advice = timelapse_advice(cfg)
    assert advice is not None and "600 s apart" in advice and "tracker.mode: timelapse" in advice
    assert timelapse_advice(parse_config(text + "tracker: {mode: timelapse}\n", "trap.yaml")) is None
    assert (
        timelapse_advice(parse_config(text.replace("snapshot_every: 120", "snapshot_every: 1"), "t.yaml"))
        is None
    )
    with caplog.at_level("WARNING", logger="trapcam.loop"):
        Pipeline(cfg).run()
    said = [r.getMessage() for r in caplog.records if "tracker.mode: timelapse" in r.getMessage()]
    assert said == [advice]  # once: the gaps between the frames do not say it again
    statuses = [s for (s,) in query(tmp_path / "data" / "trapcam.db", "SELECT status FROM health")]
    assert statuses and all("frames-too-far-apart" in s for s in statuses), statuses
    config = tmp_path / "trap.yaml"
    config.write_text(text, encoding="utf-8")
    cli = trapcam("validate-config", str(config))
    assert cli.returncode == 0 and f"{config}: note: {advice}" in cli.stdout


def test_camtrap_dp_has_one_media_observation_per_snapshot_and_one_event_per_individual(
    tmp_path: Path,
) -> None:
    """Camtrap DP's own model: each kept snapshot is a media file with media-level observations (per
    taxon what it showed, or 'blank'), each linked individual one event-level observation, the ones
    to sum. Made on a synthetic time-lapse night replayed through the real pipeline."""
    import csv
    import json

    import cv2

    from edge.config import ExportConfig, SiteConfig
    from edge.export import validate_camtrap_dp, write_camtrap_dp

    night = _night(seed=6)
    frames = write_night(night, tmp_path / "night")
    text = _config(tmp_path, frames, "data", "timelapse").replace(
        "storage: {save_crops: false}", "storage: {snapshot_width: 320}"
    )
    result = Pipeline(parse_config(text, "trap.yaml")).run()
    db, crops = tmp_path / "data" / "trapcam.db", tmp_path / "data" / "crops"
    kept = query(db, "SELECT snapshot_id, frame_index, image_path FROM snapshots ORDER BY frame_index")
    assert len(kept) == len(night) and all(p for _, _, p in kept)
    image = cv2.imread(str(crops / kept[0][2]))
    assert image is not None and image.shape[:2] == (180, 320)  # 640 x 360 kept at 320 px across
    ended = {t for (t,) in query(db, "SELECT track_id FROM tracks WHERE status = 'ended'")}
    shown = {
        i: {t for (t,) in query(db, f"SELECT track_id FROM detections WHERE frame_index = {i}")} & ended
        for i in range(len(night))
    }

    site = SiteConfig(timezone="UTC", latitude=46.5, longitude=7.25)
    pkg = write_camtrap_dp(db, tmp_path / "dp", [night.timestamp(0).date()], site, ExportConfig(), "tl-1")
    assert validate_camtrap_dp(pkg) == []
    media = {r["mediaID"]: r for r in csv.DictReader((pkg / "media.csv").open())}
    observations = list(csv.DictReader((pkg / "observations.csv").open()))
    for snapshot_id, frame_index, path in kept:
        row = media[f"s{snapshot_id}"]
        assert row["captureMethod"] == "timeLapse" and row["filePath"] == f"media/{path}"
        assert (pkg / row["filePath"]).is_file()
        own = [o for o in observations if o["mediaID"] == f"s{snapshot_id}"]
        assert {o["observationLevel"] for o in own} == {"media"}
        if not shown[frame_index]:
            assert [o["observationType"] for o in own] == ["blank"]
            continue
        assert sum(int(o["count"]) for o in own) == len(shown[frame_index])
        named = {int(t) for o in own for t in o["observationTags"].split("tracks:")[1].split(",")}
        assert named == shown[frame_index]
    events = [o for o in observations if o["observationLevel"] == "event"]
    assert sorted(int(o["eventID"]) for o in events) == sorted(result.finished_tracks)
    assert sum(int(o["count"]) for o in events) == len(result.finished_tracks)
    descriptor = json.loads((pkg / "datapackage.json").read_text())
    assert descriptor["project"]["observationLevel"] == ["event", "media"]
    assert "timeLapse" in descriptor["project"]["captureMethod"]
    assert any(shown.values()) and not all(shown.values())  # the night has insects and blank snapshots
