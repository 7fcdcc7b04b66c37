"""edge/restart.py on a real database, one promise at a time (issue 26): which runs a replay resumes
after, what `--from-start` supersedes, which tracks a restart continues, and what it says."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge.intervals import SummaryRow, store_summary
from edge.restart import Processed, carried_tracks, describe, forget, processed_before, supersede
from edge.store.db import Database, connect_reader
from edge.store.schema import RunInfo, TrackRow
from edge.track.resume import ResumeState

T0 = datetime(2026, 7, 1, 21, 0, tzinfo=timezone.utc)
NIGHT, OTHER = "folder:/data/night-1", "folder:/data/night-2"


def run(db: Database, source: str) -> int:
    return db.start_run(RunInfo(device_id="trap-01", software_version="0", config_json="{}", source=source))


def summary(db: Database, run_id: int, minutes: int) -> None:
    start = T0 + timedelta(minutes=minutes)
    store_summary(db, SummaryRow(run_id, start, start + timedelta(minutes=1), 60.0, 10, 0, 0, {}))


def track(tid: int, run_id: int, status: str = "ended", resume: str | None = None, **kw: object) -> TrackRow:
    return TrackRow(
        track_id=tid,
        run_id=run_id,
        status=status,
        first_utc=T0 + timedelta(seconds=tid),
        last_utc=T0 + timedelta(seconds=tid + 30),
        hits=5 + tid,
        x0=10,
        y0=20,
        x1=60,
        y1=80,
        resume_json=resume,
        **kw,  # type: ignore[arg-type]
    )


def rows(path: Path, sql: str) -> list[tuple]:
    conn = connect_reader(path)
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def test_a_replay_resumes_after_the_last_frame_of_the_current_runs_of_its_source(tmp_path: Path) -> None:
    db = Database(tmp_path / "t.db")
    first = run(db, NIGHT)
    assert processed_before(db, first, NIGHT) is None  # no earlier run
    second = run(db, NIGHT)
    assert processed_before(db, second, NIGHT) is None  # an earlier run, but no frame stored
    summary(db, first, 0)
    summary(db, second, 5)
    other = run(db, OTHER)
    summary(db, other, 50)  # another source's frames are not this one's
    gone = run(db, NIGHT)
    summary(db, gone, 40)
    newest = run(db, NIGHT)
    supersede(db, newest, NIGHT)  # everything before `newest` is superseded...
    assert processed_before(db, newest, NIGHT) is None
    again = run(db, NIGHT)
    summary(db, newest, 20)
    assert db.flush()
    got = processed_before(db, again, NIGHT)
    assert got == Processed(run_id=newest, runs=1, last_utc=T0 + timedelta(minutes=21))
    db.close()

    db = Database(tmp_path / "u.db")
    a, b = run(db, NIGHT), run(db, NIGHT)
    summary(db, a, 0)
    summary(db, b, 10)
    summary(db, a, 3)
    c = run(db, NIGHT)
    assert db.flush()
    assert processed_before(db, c, NIGHT) == Processed(run_id=b, runs=2, last_utc=T0 + timedelta(minutes=11))
    db.close()


def test_from_start_supersedes_the_older_runs_of_its_source_and_discards_their_counts(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    db = Database(path)
    a, b, other = run(db, NIGHT), run(db, NIGHT), run(db, OTHER)
    db.upsert_track(track(1, a, resume=ResumeState(None, None).to_json()))
    db.upsert_track(track(2, b))
    db.upsert_track(track(3, b, status="discarded", discard_reason="partial"))
    db.upsert_track(track(4, other))
    new = run(db, NIGHT)
    assert db.flush()
    assert supersede(db, new, NIGHT) == [a, b]
    assert supersede(db, new, NIGHT) == []  # nothing current is left to supersede
    assert rows(path, "SELECT run_id, superseded_by FROM runs ORDER BY run_id") == [
        (a, new),
        (b, new),
        (other, None),
        (new, None),
    ]
    assert rows(
        path, "SELECT track_id, status, discard_reason, resume_json FROM tracks ORDER BY track_id"
    ) == [
        (1, "discarded", "superseded", None),
        (2, "discarded", "superseded", None),
        (3, "discarded", "partial", None),  # its own reason stays
        (4, "ended", None, None),
    ]
    db.close()


def test_a_restart_continues_the_counted_tracks_its_source_left_with_their_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "t.db"
    db = Database(path)
    earlier, other = run(db, NIGHT), run(db, OTHER)
    state = ResumeState(None, None, best_box=(10, 20, 60, 80), counted=True, revision=2)
    db.upsert_track(
        track(
            1,
            earlier,
            resume=state.to_json(),
            level="species",
            label="Noctua pronuba",
            score=0.8,
            votes_json={"species": {"Noctua pronuba": 1.6}},
            best_detection_id=None,
            moved_px=12.5,
            edge_hits=2,
        )
    )
    db.upsert_track(track(2, earlier))  # ended by the tracker: no state, not continued
    db.upsert_track(track(3, earlier, resume='{"best_box": [1, 2]}'))  # damaged: a warning, skipped
    db.upsert_track(track(4, other, resume=state.to_json()))  # another source
    db.upsert_track(track(5, earlier, resume=ResumeState(None, None).to_json()))  # no answer, no votes
    now = run(db, NIGHT)
    later = run(db, NIGHT)
    db.upsert_track(track(6, later, resume=state.to_json()))  # a later run's: not this run's past
    assert db.flush()
    with caplog.at_level(logging.WARNING, logger="trapcam.restart"):
        carried = carried_tracks(db, now, NIGHT)
    assert [s.track_id for s, _ in carried] == [1, 5]
    first, resume = carried[0]
    assert resume == state
    assert (first.status, first.first_seen, first.last_seen, first.hits, first.misses) == (
        "confirmed",
        T0 + timedelta(seconds=1),
        T0 + timedelta(seconds=31),
        6,
        0,
    )
    assert (first.box.x0, first.box.y0, first.box.x1, first.box.y1) == (10, 20, 60, 80)
    assert (first.level, first.label, first.score) == ("species", "Noctua pronuba", 0.8)
    assert (first.votes, first.best_detection_id, first.moved_px, first.edge_hits) == (
        {"species": {"Noctua pronuba": 1.6}},
        0,
        12.5,
        2,
    )
    plain = carried[1][0]
    assert (plain.level, plain.label, plain.score, plain.votes, plain.moved_px) == (None, None, 0.0, {}, 0.0)
    assert [r.getMessage() for r in caplog.records] == [
        "track 3: its saved state cannot be continued (resume state: best_box [1, 2]; expected four integers "
        "or null); a new track starts"
    ]
    forget(db, 1)
    assert db.flush()
    assert [s.track_id for s, _ in carried_tracks(db, now, NIGHT)] == [5]
    db.close()


def test_a_resumed_replay_says_how_far_and_by_which_runs() -> None:
    when = datetime(2026, 7, 1, 23, 4, 5, 678, tzinfo=timezone.utc)
    tail = (
        "resuming after them, so nothing is counted twice (--from-start re-processes them into a new run "
        "that supersedes the old counts)"
    )
    assert describe(Processed(7, 1, when), NIGHT) == (
        f"{NIGHT}: frames up to 2026-07-01 23:04:05 UTC were processed by run 7; {tail}"
    )
    assert describe(Processed(9, 3, when), NIGHT) == (
        f"{NIGHT}: frames up to 2026-07-01 23:04:05 UTC were processed by 3 runs (latest: 9); {tail}"
    )
