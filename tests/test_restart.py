"""One insect, one count, across restarts (issue 22): real SQLite, real pipeline runs, real SIGKILLs.

A trap restarts (crash, watchdog, power cut, update) and a replay is run again by hand. Before,
each restart counted again: insects sitting through it got a second track, replays re-processed
frames already stored, and a night replayed twice counted twice (28 for 14).
"""

from __future__ import annotations

import json
import logging
import random
import signal
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import query, synthetic_config
from mqtt_broker import Broker, Subscriber, wait_until

from edge.config import TrackerConfig
from edge.detect.base import Box, Detection
from edge.export.data import effort_seconds, read_tracks, snapshot
from edge.pipeline import Pipeline
from edge.store.db import Database
from edge.track import TrackingError
from edge.track.resume import ResumeState
from edge.track.tracker import Tracker, TrackInput

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2026, 7, 1, 21, 30, tzinfo=timezone.utc)
NIGHT = {"width": 640, "height": 360, "frames": 240, "insects": 24, "seed": 7, "frame_interval_s": 0.05}
GAP_S = NIGHT["frame_interval_s"]


def _night_config(data: Path, **extra: object) -> object:
    return synthetic_config(
        data, "storage: {flush_interval_s: 0.2}\n", start=f"'{START.isoformat()}'", **(NIGHT | extra)
    )


def _exported(db: Path) -> tuple[int, float]:
    """What the exports read: finished tracks of the night, and its effort in seconds."""
    window = [(START - timedelta(hours=1), START + timedelta(hours=1))]
    with snapshot(db) as conn:
        return len(read_tracks(conn, window)), effort_seconds(conn, *window[0])


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, float]:
    """The night run once, start to end: the counts every restart below must give again."""
    cfg = _night_config(tmp_path_factory.mktemp("unbroken") / "data")
    result = Pipeline(cfg).run()
    assert result.frames == NIGHT["frames"]
    tracks, effort = _exported(cfg.database_path)
    assert tracks == len(result.finished_tracks) >= 10
    return tracks, effort


# ---------------------------------------------------------------- the tracker


def _det(x: int, y: int, i: int) -> TrackInput:
    return TrackInput(
        detection=Detection(box=Box(x, y, x + 30, y + 20), area_px=600, score=1.0), detection_id=i
    )


def test_the_tracker_continues_a_carried_track_and_lets_a_gone_one_end() -> None:
    cfg = TrackerConfig(reid_window_s=0)
    first = Tracker(cfg)
    t = START
    for i in range(3):
        first.update(t + timedelta(seconds=i), [_det(100, 100, 2 * i + 1), _det(400, 200, 2 * i + 2)])
    held = first.active_tracks()
    assert [s.status for s in held] == ["confirmed", "confirmed"]
    saved = [(s, first.resume_state(s.track_id)) for s in held]
    assert all(r is not None and r.vote is not None for _, r in saved)
    # round trip through the database's text, as a restart reads it
    carried = [(s, ResumeState.from_json(r.to_json())) for s, r in saved if r is not None]

    second = Tracker(cfg, first_track_id=10)
    second.carry_over(carried)
    update = second.update(t + timedelta(seconds=5), [_det(101, 100, 20)])  # the first insect sits on
    kept = held[0].track_id
    assert update.assignments == [kept]
    assert [s.track_id for s in update.revived] == [kept]  # this run's from now on
    assert update.confirmed == []  # not confirmed again: it was counted already
    for k in range(6, 12):  # the second insect is gone: its track is lost and ends by the usual rules
        update = second.update(t + timedelta(seconds=k), [_det(101, 100, 20 + k)])
        if update.ended:
            break
    assert [s.track_id for s in update.ended] == [held[1].track_id]
    assert second.update(t + timedelta(seconds=13), [_det(300, 50, 40)]).assignments == [10]  # new ids go on


def test_carried_tracks_are_refused_after_the_first_frame_and_dropped_when_frames_go_back() -> None:
    first = Tracker(TrackerConfig())
    for i in range(3):
        first.update(START + timedelta(seconds=i), [_det(100, 100, i + 1)])
    (state,) = first.active_tracks()
    resume = first.resume_state(state.track_id)
    assert resume is not None
    late = Tracker(TrackerConfig())
    late.update(START, [])
    with pytest.raises(TrackingError, match="carry_over after the first frame"):
        late.carry_over([(state, resume)])
    replayed = Tracker(TrackerConfig(), first_track_id=5)
    replayed.carry_over([(state, resume)])
    update = replayed.update(START, [_det(100, 100, 9)])  # the same frames again: not a continuation
    assert update.assignments == [5] and not update.revived


def test_a_damaged_resume_state_names_what_is_wrong() -> None:
    with pytest.raises(TrackingError, match="best_key"):
        ResumeState.from_json(json.dumps({"best_key": [1, 2]}))
    with pytest.raises(TrackingError, match="appearance is not base64"):
        ResumeState.from_json(json.dumps({"appearance": "%%%"}))
    with pytest.raises(TrackingError, match="not JSON"):
        ResumeState.from_json("{")


# ---------------------------------------------------------------- the pipeline, in process


def test_a_stop_mid_night_then_a_restart_counts_as_the_unbroken_night(
    tmp_path: Path, unbroken: tuple[int, float]
) -> None:
    cfg = _night_config(tmp_path / "data")
    first = Pipeline(cfg).run(max_frames=137)
    again = Pipeline(cfg).run()
    assert first.frames == 137 and again.skipped_frames == 137 and again.frames == NIGHT["frames"] - 137
    assert again.carried_tracks >= 3 and again.continued_tracks >= 3  # sitters went on, same ids
    tracks, effort = _exported(cfg.database_path)
    assert tracks == unbroken[0]
    assert abs(effort - unbroken[1]) <= GAP_S + 1e-6  # the gap across the restart is not effort
    db = cfg.database_path
    summarised = query(db, "SELECT SUM(tracks) FROM summaries")[0][0]
    assert summarised == tracks  # no track counted in both runs' summaries
    restarted_at = (START + timedelta(seconds=GAP_S * 137)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    continued = query(db, "SELECT COUNT(*) FROM tracks WHERE run_id = 2 AND first_utc < ?", (restarted_at,))
    assert continued[0][0] == again.continued_tracks  # begun in the first run, finished by the second


def test_mqtt_consumers_get_a_continued_track_as_its_next_revision_and_hear_of_superseded_runs(
    tmp_path: Path, unbroken: tuple[int, float]
) -> None:
    """A clean stop publishes the tracks it closes; the run after it continues the sitters and
    publishes them again, same track_id, revision 2, carrying the whole visit. A consumer that keeps
    the highest revision per track_id counts the unbroken night; --from-start tells it which runs
    to drop."""
    with Broker(tmp_path / "broker") as broker:
        extra = f"mqtt: {{enabled: true, host: {broker.host}, port: {broker.port}}}\n"
        cfg = synthetic_config(
            tmp_path / "data",
            "storage: {flush_interval_s: 0.2}\n" + extra,
            start=f"'{START.isoformat()}'",
            **NIGHT,
        )
        track_topic, event_topic = f"trapcam/{cfg.device_id}/track", f"trapcam/{cfg.device_id}/event"
        with Subscriber(broker, [track_topic, event_topic]) as sub:
            Pipeline(cfg).run(max_frames=137)
            again = Pipeline(cfg).run()
            ended = query(cfg.database_path, "SELECT COUNT(*) FROM tracks WHERE status = 'ended'")[0][0]
            assert wait_until(
                lambda: len({m.payload["track_id"] for m in sub.snapshot(track_topic)}) >= ended,
                timeout=30,
            )
            tracks = [m.payload for m in sub.snapshot(track_topic)]  # the night, before it is redone
            Pipeline(cfg, from_start=True).run(max_frames=5)
            assert wait_until(lambda: sub.snapshot(event_topic), timeout=30)
            (event,) = [m.payload for m in sub.snapshot(event_topic)]
    latest: dict[int, dict[str, object]] = {}
    for payload in tracks:
        if payload["revision"] >= latest.get(payload["track_id"], {"revision": 0})["revision"]:
            latest[payload["track_id"]] = payload
    counted = [p for p in latest.values() if p["counted"]]
    assert len(counted) == unbroken[0] == ended  # one count per insect for the consumer too
    revised = {t for t, p in latest.items() if p["revision"] == 2}
    assert revised and len(revised) <= again.continued_tracks
    for track_id in revised:
        first = next(p for p in tracks if p["track_id"] == track_id and p["revision"] == 1)
        assert first["run_id"] == 1 and latest[track_id]["run_id"] == 2
        assert latest[track_id]["first_utc"] == first["first_utc"]  # the same visit, longer
        assert latest[track_id]["last_utc"] >= first["last_utc"]
    assert event["event"] == "runs-superseded" and event["runs"] == [1, 2] and event["by_run"] == 3


def test_a_night_replayed_twice_counts_once_and_says_so(
    tmp_path: Path, unbroken: tuple[int, float], caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _night_config(tmp_path / "data")
    Pipeline(cfg).run()
    with caplog.at_level(logging.WARNING, logger="trapcam.loop"):
        second = Pipeline(cfg).run()
    assert second.frames == 0 and second.skipped_frames == NIGHT["frames"] and not second.finished_tracks
    (said,) = [r.getMessage() for r in caplog.records if "were processed by run 1" in r.getMessage()]
    assert "21:30:11" in said and "--from-start" in said  # which times, which run, what to do instead
    assert _exported(cfg.database_path) == pytest.approx(unbroken)


def test_from_start_supersedes_the_earlier_run_and_counts_once(
    tmp_path: Path, unbroken: tuple[int, float]
) -> None:
    cfg = _night_config(tmp_path / "data")
    Pipeline(cfg).run(max_frames=100)
    Pipeline(cfg).run()  # resumed: two runs of the same night
    redo = Pipeline(cfg, from_start=True).run()
    assert redo.frames == NIGHT["frames"] and redo.skipped_frames == 0 and redo.carried_tracks == 0
    db = cfg.database_path
    assert query(db, "SELECT run_id, superseded_by FROM runs ORDER BY run_id") == [(1, 3), (2, 3), (3, None)]
    assert _exported(db) == pytest.approx(unbroken)  # the newest run's counts and effort, once
    marked = query(db, "SELECT COUNT(*) FROM tracks WHERE run_id < 3 AND discard_reason = 'superseded'")[0][0]
    assert marked >= unbroken[0] - 2  # the old rows are kept, marked, not deleted
    again = Pipeline(cfg).run()  # and a later plain run resumes after the redo
    assert again.frames == 0 and _exported(db) == pytest.approx(unbroken)


def test_a_folder_replay_resumes_after_the_last_stored_frame_without_decoding_the_rest(
    tmp_path: Path,
) -> None:
    from test_sources_folder import write_jpeg

    frames = tmp_path / "frames"
    for i in range(12):
        write_jpeg(frames / f"20260701-2130{i:02d}.jpg", value=10 * i)
    (frames / "20260701-213003.jpg").write_bytes(b"not a jpeg")  # read, never decoded, when skipped
    config = (
        f"data_dir: {tmp_path / 'data'}\nsource: {{kind: folder, path: {frames}, timestamps: filename, "
        "filename_format: '%Y%m%d-%H%M%S'}\ndetector: {kind: motion}\n"
    )
    from edge.config import parse_config

    cfg = parse_config(config, "test")
    first = Pipeline(cfg).run(max_frames=6)
    assert first.frames == 6 and first.corrupt == 1
    second = Pipeline(cfg).run()
    assert second.skipped_frames == 7 and second.frames == 5 and second.corrupt == 0
    stamps = [r[0] for r in query(cfg.database_path, "SELECT end_utc FROM summaries ORDER BY end_utc")]
    assert stamps[-1] == "2026-07-01T21:30:11.000000Z"


def test_an_unreadable_resume_state_is_a_warning_and_the_trap_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _night_config(tmp_path / "data")
    Pipeline(cfg).run(max_frames=120)
    with Database(cfg.database_path) as db:
        db.submit("UPDATE tracks SET resume_json = '{\"best_key\": 3}' WHERE resume_json IS NOT NULL")
    with caplog.at_level(logging.WARNING, logger="trapcam.restart"):
        result = Pipeline(cfg).run()
    assert result.frames == NIGHT["frames"] - 120 and result.carried_tracks == 0
    assert any("cannot be continued" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- SIGKILL campaign


def test_four_sigkills_at_random_moments_count_as_the_unbroken_night(
    tmp_path: Path, unbroken: tuple[int, float]
) -> None:
    data = tmp_path / "data"
    db = data / "trapcam.db"
    config = tmp_path / "trap.yaml"
    source = ", ".join(f"{k}: {v}" for k, v in NIGHT.items())
    config.write_text(
        f"data_dir: {data}\nsource: {{kind: synthetic, {source}, realtime: true, "
        f"start: '{START.isoformat()}'}}\nstorage: {{flush_interval_s: 0.2}}\n"
    )
    end = START + timedelta(seconds=GAP_S * (NIGHT["frames"] - 1))

    def reached(moment: datetime) -> bool:
        last = progress()
        return last is not None and last >= moment

    def progress() -> datetime | None:
        try:
            last = query(db, "SELECT MAX(end_utc) FROM summaries")[0][0] if db.exists() else None
        except sqlite3.Error:
            return None
        return datetime.fromisoformat(last.replace("Z", "+00:00")) if last else None

    rng = random.Random(22)
    moments = sorted(START + (end - START) * rng.uniform(0.1, 0.9) for _ in range(4))
    for moment in moments:
        trap = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            got_there = wait_until(lambda: reached(moment), timeout=120, step=0.05)  # noqa: B023
        finally:
            trap.send_signal(signal.SIGKILL)
            trap.wait(30)
        assert got_there, f"the night never reached {moment:%H:%M:%S.%f} before the kill"
    last = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
    )
    assert last.returncode == 0, last.stderr[-2000:]
    runs = query(db, "SELECT COUNT(*), SUM(exit_reason LIKE 'interrupted%') FROM runs")[0]
    assert runs == (5, 4)
    tracks, effort = _exported(db)
    assert abs(tracks - unbroken[0]) <= 0.05 * unbroken[0], (tracks, unbroken[0])
    assert unbroken[1] - 4 * GAP_S - 1e-6 <= effort <= unbroken[1] + 1e-6, (effort, unbroken[1])
    assert query(db, "PRAGMA integrity_check")[0][0] == "ok"
