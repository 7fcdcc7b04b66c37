"""The MQTT outbox on a real database: order with the track rows, delivery marks, bounds, restarts.

Also the message builders and the credential sources (no broker needed for any of these).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge.config import MqttConfig
from edge.errors import ConfigError, MqttError, StorageError
from edge.mqtt import (
    Message,
    Outbox,
    health_message,
    redact,
    resolve_password,
    status_message,
    summary_message,
    topic,
    track_message,
)
from edge.mqtt.outbox import DROPPED_HEALTH, DROPPED_SUMMARY
from edge.store.db import Database, connect_reader
from edge.store.schema import RunInfo, TrackRow

T0 = datetime(2026, 7, 1, 21, 30, tzinfo=timezone.utc)
PREFIX, DEVICE = "trapcam", "trap-07"


def open_db(path: Path, **kw: object) -> Database:
    return Database(path, batch_size=50, flush_interval_s=0.05, **kw)


def start_run(db: Database) -> int:
    return db.start_run(
        RunInfo(device_id=DEVICE, software_version="test", config_json="{}", source="synthetic")
    )


def track_row(run_id: int, track_id: int) -> TrackRow:
    return TrackRow(
        track_id=track_id,
        run_id=run_id,
        status="ended",
        first_utc=T0 + timedelta(seconds=track_id),
        last_utc=T0 + timedelta(seconds=track_id + 30),
        hits=12,
        x0=10,
        y0=10,
        x1=60,
        y1=50,
        level="species",
        label="Noctua pronuba",
        score=0.91,
        lineage_json={"order": "Lepidoptera", "species": "Noctua pronuba"},
        best_detection_id=None,
        moved_px=14.5,
    )


def track_dict(row: TrackRow) -> dict[str, object]:
    return {
        "track_id": row.track_id,
        "run_id": row.run_id,
        "first_utc": row.first_utc,
        "last_utc": row.last_utc,
        "hits": row.hits,
        "level": row.level,
        "label": row.label,
        "score": row.score,
        "lineage": row.lineage_json,
        "best_detection_id": row.best_detection_id,
        "moved_px": row.moved_px,
    }


def rows(db_path: Path, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
    con = connect_reader(db_path)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


# ---------------------------------------------------------------- order with the track rows


def test_each_message_is_committed_with_its_track_and_in_enqueue_order(tmp_path: Path) -> None:
    """A reader polling while tracks are written never sees a track message without its track row."""
    db_path = tmp_path / "trap.db"
    db = open_db(db_path)
    outbox = Outbox(db, MqttConfig())
    run_id = start_run(db)
    n = 400
    orphans: list[int] = []
    done = threading.Event()

    def watch() -> None:
        con = connect_reader(db_path)
        try:
            while not done.is_set():
                orphans.extend(
                    r[0]
                    for r in con.execute(
                        "SELECT o.seq FROM outbox o WHERE o.kind = 'track' AND NOT EXISTS "
                        "(SELECT 1 FROM tracks t WHERE t.track_id = json_extract(o.payload, '$.track_id'))"
                    )
                )
        finally:
            con.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    ids = []
    try:
        for track_id in range(1, n + 1):
            row = track_row(run_id, track_id)
            db.upsert_track(row)
            message = track_message(PREFIX, DEVICE, track_dict(row))
            outbox.enqueue(message)
            ids.append(message.msg_id)
        assert db.flush(30)
    finally:
        done.set()
        watcher.join()
    assert orphans == []
    stored = rows(db_path, "SELECT msg_id, json_extract(payload, '$.track_id') FROM outbox ORDER BY seq")
    assert [r[0] for r in stored] == ids
    assert [r[1] for r in stored] == list(range(1, n + 1))
    db.close()


def test_enqueue_returns_before_the_row_is_committed(tmp_path: Path) -> None:
    """Enqueue only hands the row to the writer: nothing is visible until the writer commits."""
    db = Database(tmp_path / "trap.db", flush_interval_s=30.0)  # the writer waits 30 s for a batch
    outbox = Outbox(db, MqttConfig())
    outbox.enqueue(health_message(PREFIX, DEVICE, {"fps": 4.0}))
    assert outbox.pending() == []
    assert db.flush(10)
    assert len(outbox.pending()) == 1
    db.close()


def test_listeners_hear_every_enqueue(tmp_path: Path) -> None:
    db = open_db(tmp_path / "trap.db")
    outbox = Outbox(db, MqttConfig())
    calls: list[int] = []
    outbox.add_listener(lambda: calls.append(1))
    for _ in range(3):
        outbox.enqueue(health_message(PREFIX, DEVICE, {"fps": 4.0}))
    assert len(calls) == 3
    db.close()


# ---------------------------------------------------------------- pending / delivered


def test_pending_pages_in_seq_order_and_mark_delivered_removes_rows(tmp_path: Path) -> None:
    db_path = tmp_path / "trap.db"
    db = open_db(db_path)
    outbox = Outbox(db, MqttConfig())
    messages = [health_message(PREFIX, DEVICE, {"n": i}) for i in range(10)]
    for m in messages:
        outbox.enqueue(m)
    assert db.flush(10)

    first = outbox.pending(limit=3)
    assert [r.msg_id for r in first] == [m.msg_id for m in messages[:3]]
    rest = outbox.pending(after_seq=first[-1].seq, limit=100)
    assert [r.msg_id for r in rest] == [m.msg_id for m in messages[3:]]
    row = first[0]
    assert (row.kind, row.topic, row.qos, row.retain, row.attempts) == (
        "health",
        topic(PREFIX, DEVICE, "health"),
        1,
        False,
        0,
    )
    assert json.loads(row.payload) == messages[0].payload

    outbox.note_attempt([r.seq for r in first])
    outbox.note_attempt([first[0].seq])
    outbox.mark_delivered([r.seq for r in first] + [rest[0].seq])
    assert db.flush(10)
    left = outbox.pending(limit=100)
    assert [r.msg_id for r in left] == [m.msg_id for m in messages[4:]]
    attempts = dict(rows(db_path, "SELECT seq, attempts FROM outbox"))
    assert [attempts[r.seq] for r in first] == [2, 1, 1]
    stats = outbox.stats()
    assert stats["pending"] == 6
    assert stats["delivered_total"] == 4
    assert (
        stats["oldest_pending_utc"]
        == rows(db_path, "SELECT created_utc FROM outbox WHERE seq = ?", (left[0].seq,))[0][0]
    )

    # Delivered is final: marking again changes nothing (the first delivery time stays).
    before = rows(db_path, "SELECT delivered_utc FROM outbox WHERE seq = ?", (first[0].seq,))[0][0]
    outbox.mark_delivered([first[0].seq])
    assert db.flush(10)
    assert rows(db_path, "SELECT delivered_utc FROM outbox WHERE seq = ?", (first[0].seq,))[0][0] == before
    db.close()


def test_the_same_message_enqueued_twice_is_stored_once(tmp_path: Path) -> None:
    db_path = tmp_path / "trap.db"
    db = open_db(db_path)
    outbox = Outbox(db, MqttConfig())
    message = health_message(PREFIX, DEVICE, {"fps": 1.0})
    outbox.enqueue(message)
    outbox.enqueue(message)
    assert db.flush(10)
    assert len(outbox.pending()) == 1
    assert db.rejected == 0
    db.close()


def test_outbox_survives_close_and_reopen(tmp_path: Path) -> None:
    db_path = tmp_path / "trap.db"
    db = open_db(db_path)
    outbox = Outbox(db, MqttConfig())
    run_id = start_run(db)
    sent = [track_message(PREFIX, DEVICE, track_dict(track_row(run_id, i))) for i in range(1, 21)]
    for m in sent:
        outbox.enqueue(m)
    db.close()  # close writes what is queued

    db = open_db(db_path)
    outbox = Outbox(db, MqttConfig())
    pending = outbox.pending(limit=100)
    assert [r.msg_id for r in pending] == [m.msg_id for m in sent]
    outbox.mark_delivered([r.seq for r in pending[:5]])
    db.close()

    db = open_db(db_path)
    outbox = Outbox(db, MqttConfig())
    assert [r.msg_id for r in outbox.pending(limit=100)] == [m.msg_id for m in sent[5:]]
    assert outbox.stats()["delivered_total"] == 5
    db.close()


# ---------------------------------------------------------------- compaction


def kinds_pending(db_path: Path) -> dict[str, int]:
    return dict(rows(db_path, "SELECT kind, COUNT(*) FROM outbox WHERE delivered_utc IS NULL GROUP BY kind"))


def counters(db_path: Path) -> dict[str, int]:
    return dict(rows(db_path, "SELECT name, value FROM counters"))


def outbox_of_tracks(tmp_path: Path, tracks: int) -> tuple[Path, Database, Outbox, int]:
    """A database whose outbox (bound 100) holds `tracks` undelivered track messages, committed."""
    db_path = tmp_path / "trap.db"
    db = open_db(db_path)
    outbox = Outbox(db, MqttConfig(outbox_max_rows=100))
    run_id = start_run(db)
    for i in range(tracks):
        outbox.enqueue(track_message(PREFIX, DEVICE, track_dict(track_row(run_id, i + 1))))
    assert db.flush(10)
    return db_path, db, outbox, run_id


def test_compact_drops_old_health_first_then_superseded_summaries_never_tracks(tmp_path: Path) -> None:
    db_path = tmp_path / "trap.db"
    db = open_db(db_path)
    outbox = Outbox(db, MqttConfig(outbox_max_rows=100))
    run_id = start_run(db)
    health, summaries, tracks = [], [], []
    for i in range(60):  # interleaved as in a night: tracks, health every 2nd, a summary every 3rd
        m = track_message(PREFIX, DEVICE, track_dict(track_row(run_id, i + 1)))
        tracks.append(m)
        outbox.enqueue(m)
        if i % 2 == 0:
            health.append(health_message(PREFIX, DEVICE, {"n": i}))
            outbox.enqueue(health[-1])
        if i % 3 == 0:
            summaries.append(summary_message(PREFIX, DEVICE, {"n": i, "today": {"Noctua pronuba": i}}))
            outbox.enqueue(summaries[-1])
    assert db.flush(10)
    assert kinds_pending(db_path) == {"track": 60, "health": 30, "summary": 20}  # 110 > 100

    report = outbox.compact(T0)
    assert (report.dropped_health, report.dropped_summary, report.over_bound) == (10, 0, False)
    assert report.pending == 100
    left = {r[0] for r in rows(db_path, "SELECT msg_id FROM outbox")}
    assert not {m.msg_id for m in health[:10]} & left, "the oldest health samples go first"
    assert {m.msg_id for m in health[10:]} <= left
    assert counters(db_path)[DROPPED_HEALTH] == 10

    # 45 more tracks: 145 undelivered; all 20 health go, then 19 summaries, the newest one stays.
    for i in range(60, 105):
        outbox.enqueue(track_message(PREFIX, DEVICE, track_dict(track_row(run_id, i + 1))))
    assert db.flush(10)
    report = outbox.compact(T0)
    assert (report.dropped_health, report.dropped_summary) == (20, 19)
    assert report.over_bound is True  # 105 tracks > 100, and they are kept
    assert kinds_pending(db_path) == {"track": 105, "summary": 1}
    assert rows(db_path, "SELECT msg_id FROM outbox WHERE kind = 'summary'")[0][0] == summaries[-1].msg_id
    c = counters(db_path)
    assert (c[DROPPED_HEALTH], c[DROPPED_SUMMARY]) == (30, 19)
    stats = outbox.stats()
    assert (stats["dropped_health"], stats["dropped_summary"], stats["pending"]) == (30, 19, 106)
    db.close()


def test_tracks_over_the_bound_are_kept_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_path, db, outbox, _ = outbox_of_tracks(tmp_path, 130)
    with caplog.at_level(logging.WARNING, logger="edge.mqtt.outbox"):
        first = outbox.compact(T0)
        second = outbox.compact(T0)
    assert first.over_bound and second.over_bound
    assert (first.dropped_health, first.dropped_summary, first.pending) == (0, 0, 130)
    assert kinds_pending(db_path) == {"track": 130}
    warnings = [r for r in caplog.records if "outbox_max_rows" in r.getMessage()]
    assert len(warnings) == 1
    db.close()


def test_compact_deletes_delivered_rows_after_the_keep_time(tmp_path: Path) -> None:
    db_path = tmp_path / "trap.db"
    db = open_db(db_path)
    outbox = Outbox(db, MqttConfig(delivered_keep_days=7))
    for i in range(10):
        outbox.enqueue(health_message(PREFIX, DEVICE, {"n": i}))
    assert db.flush(10)
    outbox.mark_delivered([r.seq for r in outbox.pending(limit=4)])
    assert db.flush(10)
    now = datetime.now(timezone.utc)
    assert outbox.compact(now + timedelta(days=6)).deleted_delivered == 0
    report = outbox.compact(now + timedelta(days=7, minutes=1))
    assert report.deleted_delivered == 4
    assert report.dropped_health == 0  # undelivered rows within the bound are never touched
    assert len(rows(db_path, "SELECT seq FROM outbox")) == 6
    assert outbox.stats()["delivered_total"] == 4  # the count survives the deletion
    db.close()


# ---------------------------------------------------------------- messages


def test_track_message_payload() -> None:
    row = track_row(3, 42)
    m = track_message(PREFIX, DEVICE, track_dict(row))
    assert (m.kind, m.topic, m.qos, m.retain) == ("track", "trapcam/trap-07/track", 1, False)
    p = m.payload
    assert p["id"] == m.msg_id and m.msg_id.startswith("trap-07-track-")
    assert p["device_id"] == DEVICE and p["ts"].endswith("Z")
    assert p["first_utc"] == "2026-07-01T21:30:42.000000Z"
    assert p["last_utc"] == "2026-07-01T21:31:12.000000Z"
    assert p["duration_s"] == 30.0
    assert (p["track_id"], p["run_id"], p["hits"], p["label"], p["level"]) == (
        42,
        3,
        12,
        "Noctua pronuba",
        "species",
    )
    assert p["lineage"] == {"order": "Lepidoptera", "species": "Noctua pronuba"}
    assert json.loads(m.payload_json()) == p
    other = track_message(PREFIX, DEVICE, track_dict(row))
    assert other.msg_id != m.msg_id


def test_status_summary_health_flags() -> None:
    online = status_message(PREFIX, DEVICE, True, version="1.0")
    assert (online.topic, online.qos, online.retain) == ("trapcam/trap-07/status", 1, True)
    assert online.payload["state"] == "online" and online.payload["version"] == "1.0"
    assert status_message(PREFIX, DEVICE, False).payload["state"] == "offline"
    summary = summary_message(
        PREFIX, DEVICE, {"start_utc": T0, "end_utc": T0 + timedelta(minutes=15), "tracks": 2}
    )
    assert (summary.qos, summary.retain, summary.payload["start_utc"]) == (
        1,
        True,
        "2026-07-01T21:30:00.000000Z",
    )
    assert summary.payload["today"] == {} and summary.payload["counts"] == {}
    health = health_message(PREFIX, DEVICE, {"fps": 3.5})
    assert (health.topic, health.qos, health.retain) == ("trapcam/trap-07/health", 1, False)


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: health_message(PREFIX, DEVICE, {"fps": math.nan}), "JSON"),
        (lambda: health_message(PREFIX, DEVICE, {"fps": object()}), "JSON"),
        (lambda: health_message(PREFIX, DEVICE, {"id": "x"}), "reserved"),
        (lambda: topic(PREFIX, "trap/7", "track"), "device_id"),
        (lambda: topic(PREFIX, DEVICE, "tracks"), "kind"),
        (
            lambda: track_message(PREFIX, DEVICE, {"track_id": 1, "first_utc": datetime(2026, 7, 1)}),
            "first_utc",
        ),
        (lambda: Message("a", "weather", "t/a", {"id": "a", "device_id": "d", "ts": "t"}, 1, False), "kind"),
        (lambda: Message("a", "track", "t/#", {"id": "a", "device_id": "d", "ts": "t"}, 1, False), "topic"),
    ],
)
def test_bad_messages_fail_in_the_caller_with_one_line(build: object, expected: str) -> None:
    with pytest.raises(MqttError, match=expected) as info:
        build()  # type: ignore[operator]
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- credentials


def test_password_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_password(MqttConfig()) is None
    assert resolve_password(MqttConfig(username="u", password="direct")) == "direct"
    monkeypatch.setenv("TRAP_MQTT_PW", "from-env")
    assert resolve_password(MqttConfig(username="u", password_env="TRAP_MQTT_PW")) == "from-env"
    secret = tmp_path / "pw"
    secret.write_text("from-file\nignored second line\n")
    assert resolve_password(MqttConfig(username="u", password_file=secret)) == "from-file"


def test_password_source_errors_name_the_variable_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRAP_MQTT_MISSING", raising=False)
    with pytest.raises(ConfigError, match="TRAP_MQTT_MISSING"):
        resolve_password(MqttConfig(username="u", password_env="TRAP_MQTT_MISSING"))
    missing = tmp_path / "nope" / "pw"
    with pytest.raises(ConfigError, match=str(missing)):
        resolve_password(MqttConfig(username="u", password_file=missing))
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        resolve_password(MqttConfig(username="u", password_file=empty))


def test_redact_hides_every_secret() -> None:
    text = "user trap with pw hunter2 failed; again hunter2"
    assert redact(text, ["hunter2", None, ""]) == "user trap with pw *** failed; again ***"
    assert redact(text, []) == text


# ---------------------------------------------------------------- promises stated for issue 26


def test_summaries_that_exactly_cover_the_excess_leave_the_outbox_within_its_bound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """98 tracks and 4 summaries of one topic, bound 100: the two oldest summaries go and the rest
    fits; the warning says what went, even when no health sample did."""
    db_path, db, outbox, _ = outbox_of_tracks(tmp_path, 98)
    for i in range(4):
        outbox.enqueue(summary_message(PREFIX, DEVICE, {"n": i, "today": {}}))
    assert db.flush(10)
    with caplog.at_level(logging.WARNING, logger="edge.mqtt.outbox"):
        report = outbox.compact(T0)
    assert (report.dropped_health, report.dropped_summary, report.pending, report.over_bound) == (
        0,
        2,
        100,
        False,
    )
    assert kinds_pending(db_path) == {"track": 98, "summary": 2}
    assert [r.getMessage() for r in caplog.records] == [
        "MQTT outbox over its bound of 100 undelivered messages: dropped 0 health and 2 summary messages "
        "(tracks are kept)"
    ]
    db.close()


def test_one_track_over_the_bound_warns_at_once_and_again_after_it_recovered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, db, outbox, run_id = outbox_of_tracks(tmp_path, 101)
    warning = (
        "MQTT outbox holds 101 undelivered messages, more than mqtt.outbox_max_rows=100, and they are tracks "
        "(never dropped): the broker has been unreachable for long; the table keeps growing"
    )
    with caplog.at_level(logging.WARNING, logger="edge.mqtt.outbox"):
        assert outbox.compact(T0).over_bound is True
        assert [r.getMessage() for r in caplog.records] == [warning]
        assert outbox.compact(T0).over_bound is True  # said once while it lasts
        assert len(caplog.records) == 1
        outbox.mark_delivered([outbox.pending(limit=1)[0].seq])  # the broker came back for a moment
        assert db.flush(10)
        assert outbox.compact(T0).over_bound is False
        outbox.enqueue(track_message(PREFIX, DEVICE, track_dict(track_row(run_id, 500))))
        assert db.flush(10)
        assert outbox.compact(T0).over_bound is True
    assert [r.getMessage() for r in caplog.records] == [warning, warning]
    db.close()


def test_pending_rows_carry_what_was_queued_and_page_by_100(tmp_path: Path) -> None:
    db = open_db(tmp_path / "trap.db")
    outbox = Outbox(db, MqttConfig())
    fresh = outbox.stats()
    assert fresh == {
        "pending": 0,
        "oldest_pending_utc": None,
        "delivered_total": 0,
        "dropped_health": 0,
        "dropped_summary": 0,
    }
    summary = summary_message(PREFIX, DEVICE, {"n": 1, "today": {}})
    health = health_message(PREFIX, DEVICE, {"n": 1})
    before = datetime.now(timezone.utc)
    outbox.enqueue(summary)
    outbox.enqueue(health)
    for i in range(105):
        outbox.enqueue(health_message(PREFIX, DEVICE, {"n": i + 2}))
    assert db.flush(10)
    page = outbox.pending()
    assert len(page) == 100 and [r.seq for r in page] == sorted(r.seq for r in page)
    first, second = page[0], page[1]
    assert (first.msg_id, first.kind, first.topic, first.qos, first.retain) == (
        summary.msg_id,
        "summary",
        summary.topic,
        summary.qos,
        True,
    )
    assert json.loads(first.payload) == json.loads(summary.payload_json()) and first.attempts == 0
    assert (second.kind, second.retain) == ("health", health.retain) and health.retain is False
    created = datetime.strptime(first.created_utc, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert before - timedelta(seconds=1) <= created <= datetime.now(timezone.utc)
    assert outbox.stats()["oldest_pending_utc"] == first.created_utc
    db.close()


def test_what_cannot_be_queued_is_refused_in_the_caller_and_a_failing_listener_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = open_db(tmp_path / "trap.db")
    outbox = Outbox(db, MqttConfig())
    with pytest.raises(MqttError) as raised:
        outbox.enqueue({"kind": "track"})  # type: ignore[arg-type]
    assert str(raised.value) == "Outbox.enqueue: expected a Message, got dict"
    odd = health_message(PREFIX, DEVICE, {"n": 1})
    object.__setattr__(odd, "kind", "gossip")  # past Message's own check
    with pytest.raises(MqttError) as raised:
        outbox.enqueue(odd)
    assert str(raised.value) == (
        "Outbox.enqueue: kind 'gossip': expected one of status, track, summary, health, discovery, event"
    )

    def broken() -> None:
        raise RuntimeError("listener bug")

    heard: list[int] = []
    outbox.add_listener(broken)
    outbox.add_listener(lambda: heard.append(1))
    with caplog.at_level(logging.ERROR, logger="edge.mqtt.outbox"):
        outbox.enqueue(health_message(PREFIX, DEVICE, {"n": 2}))
    assert heard == [1]  # the others are still called
    assert [(r.getMessage(), r.exc_info is not None) for r in caplog.records] == [
        ("outbox listener failed", True)
    ]
    outbox.remove_listener(broken)
    outbox.remove_listener(broken)  # twice: nothing to remove, no error
    outbox.enqueue(health_message(PREFIX, DEVICE, {"n": 3}))
    assert heard == [1, 1] and len(caplog.records) == 1
    assert db.flush(10)
    assert outbox.stats()["pending"] == 2
    db.close()


def test_an_outbox_that_cannot_be_read_names_the_database(tmp_path: Path) -> None:
    db_path = tmp_path / "trap.db"
    db = open_db(db_path)
    outbox = Outbox(db, MqttConfig())
    con = sqlite3.connect(db_path)
    con.execute("DROP TABLE outbox")
    con.commit()
    con.close()
    with pytest.raises(StorageError) as raised:
        outbox.pending()
    assert str(raised.value) == f"{db_path}: cannot read the outbox: no such table: outbox"
    db.close()
