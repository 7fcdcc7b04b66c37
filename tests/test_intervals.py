"""Interval summaries: effort, frames and finished tracks per clock-aligned interval.

Expected numbers are computed here from the frame list with a different method (overlap of
each counted gap with each interval) than the summarizer's (walking boundaries).
"""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import datetime, timedelta, timezone, tzinfo
from itertools import pairwise
from pathlib import Path

import pytest

from edge.classify.taxonomy import Taxonomy
from edge.classify.types import Classification, LevelPrediction
from edge.config import SummaryConfig
from edge.errors import StorageError
from edge.intervals import (
    IntervalSummarizer,
    SummaryRow,
    counts_json,
    crop_lineage,
    level_counts,
    store_summary,
    summary_from_db,
    track_lineage,
)
from edge.store.db import Database, connect_reader
from edge.store.schema import RunInfo, TrackRow
from edge.track.resume import ResumeState

T0 = datetime(2026, 7, 1, 21, 0, 0, tzinfo=timezone.utc)
LEP = {"order": "Lepidoptera", "family": "Noctuidae", "species": "Noctua pronuba"}


def track(
    tid: int,
    last: datetime,
    lineage: dict[str, str] | None = None,
    status: str = "ended",
    label: str | None = None,
    level: str | None = None,
    size_class: str | None = None,
) -> TrackRow:
    if lineage and label is None:
        level = level or list(lineage)[-1]
        label = lineage[level]
    return TrackRow(
        track_id=tid,
        run_id=1,
        status=status,
        first_utc=last - timedelta(seconds=20),
        last_utc=last,
        hits=4,
        x0=0,
        y0=0,
        x1=10,
        y1=10,
        level=level,
        label=label,
        score=0.9 if label else None,
        lineage_json=lineage,
        size_class=size_class,
    )


def frame_times(seed: int = 3) -> list[datetime]:
    """Irregular frames over ~40 min: small gaps, a few long ones, and a 20-minute outage."""
    rng = random.Random(seed)
    times, t = [], T0 + timedelta(seconds=37.25)
    while t < T0 + timedelta(minutes=40):
        times.append(t)
        r = rng.random()
        gap = rng.uniform(25, 50) if r < 0.08 else rng.uniform(0.5, 9.0)
        t += timedelta(seconds=round(gap, 6))
    times.append(t + timedelta(minutes=20))  # camera unplugged for 20 minutes
    times += [times[-1] + timedelta(seconds=4 * i) for i in range(1, 30)]
    return times


def expected_effort(times: list[datetime], interval_s: float, max_gap_s: float) -> dict[datetime, float]:
    """Per interval start: seconds of counted gaps overlapping it (independent of the summarizer)."""
    out: dict[datetime, float] = {}
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    for a, b in pairwise(times):
        gap = (b - a).total_seconds()
        if gap > max_gap_s:
            continue
        k = int((a - epoch).total_seconds() // interval_s)
        while True:
            s = epoch + timedelta(seconds=k * interval_s)
            e = s + timedelta(seconds=interval_s)
            if s >= b:
                break
            overlap = (min(b, e) - max(a, s)).total_seconds()
            if overlap > 0:
                out[s] = out.get(s, 0.0) + overlap
            k += 1
    return out


def run_all(summ: IntervalSummarizer, times: list[datetime], end: datetime | None = None) -> list[SummaryRow]:
    rows: list[SummaryRow] = []
    for t in times:
        rows += summ.on_frame(t, 0)
    rows += summ.finish(end or times[-1])
    return rows


def test_effort_is_split_at_boundaries_and_long_gaps_are_not_effort() -> None:
    cfg = SummaryConfig(interval_s=60, max_frame_gap_s=30)
    times = frame_times()
    rows = run_all(IntervalSummarizer(cfg, run_id=1, close_delay_s=10), times)
    want = expected_effort(times, 60, 30)
    got = {r.start_utc: r.effort_s for r in rows}
    assert set(got) >= set(want)
    for start, seconds in want.items():
        assert got[start] == pytest.approx(seconds, abs=1e-6), start
    # The 20-minute outage and the 25-50 s gaps are not watching time.
    allowed = sum((b - a).total_seconds() for a, b in pairwise(times) if (b - a).total_seconds() <= 30)
    assert sum(r.effort_s for r in rows) == pytest.approx(allowed, abs=1e-6)
    assert sum(r.effort_s for r in rows) < (times[-1] - times[0]).total_seconds() - 20 * 60
    # Clock-aligned: every interval starts on a whole minute; frames are counted where they fall.
    assert all(r.start_utc.second == 0 and r.start_utc.microsecond == 0 for r in rows)
    assert sum(r.frames_processed for r in rows) == len(times)
    for r in rows[:-1]:
        n = sum(1 for t in times if r.start_utc <= t < r.start_utc + timedelta(seconds=60))
        assert r.frames_processed == n
    # The outage's empty minutes yield no rows.
    outage = [r for r in rows if times[-30] < r.start_utc < times[-29] - timedelta(seconds=60)]
    assert outage == []


def test_fifteen_minute_intervals_start_at_quarter_hours() -> None:
    cfg = SummaryConfig(interval_s=900, max_frame_gap_s=300)
    times = [T0 + timedelta(minutes=7, seconds=5 * i) for i in range(800)]
    rows = run_all(IntervalSummarizer(cfg, run_id=1), times)
    assert [r.start_utc.minute for r in rows] == [0, 15, 30, 45, 0]
    assert rows[0].end_utc - rows[0].start_utc == timedelta(minutes=15)
    assert rows[1].effort_s == pytest.approx(900.0)
    assert rows[0].effort_s == pytest.approx(8 * 60)  # 21:07:00 up to the 21:15 boundary


def test_gap_exactly_at_the_limit_counts_and_just_above_does_not() -> None:
    cfg = SummaryConfig(interval_s=600, max_frame_gap_s=30)
    times = [T0, T0 + timedelta(seconds=30), T0 + timedelta(seconds=60.000001)]
    rows = run_all(IntervalSummarizer(cfg, run_id=1), times)
    assert [r.effort_s for r in rows] == [pytest.approx(30.0)]


def test_counts_per_level_come_from_the_lineage() -> None:
    cfg = SummaryConfig(interval_s=600, max_frame_gap_s=60)
    summ = IntervalSummarizer(cfg, run_id=1, close_delay_s=0)
    times = [T0 + timedelta(seconds=10 * i) for i in range(60)]  # 21:00:00 .. 21:09:50
    for t in times[:50]:
        assert summ.on_frame(t, 0) == []
    summ.on_track_finished(track(1, T0 + timedelta(minutes=2), LEP))
    summ.on_track_finished(track(2, T0 + timedelta(minutes=3), LEP))
    summ.on_track_finished(
        track(3, T0 + timedelta(minutes=4), {"order": "Lepidoptera", "family": "Geometridae"})
    )
    summ.on_track_finished(track(4, T0 + timedelta(minutes=5), {"order": "Diptera"}))
    summ.on_track_finished(track(5, T0 + timedelta(minutes=6)))  # the vote abstained: unsure
    summ.on_track_finished(track(8, T0 + timedelta(minutes=6), label="unknown"))  # the open set: its own row
    summ.on_track_finished(track(6, T0 + timedelta(minutes=6), LEP, status="discarded"))  # never counts
    summ.on_track_finished(track(7, T0 + timedelta(minutes=6), LEP, status="confirmed"))  # not finished
    for t in times[50:]:
        assert summ.on_frame(t, 0) == []
    rows = summ.on_frame(T0 + timedelta(minutes=10), 0)
    assert len(rows) == 1
    row = rows[0]
    assert row.tracks == 6
    assert row.counts == {
        "order": {"Lepidoptera": 3, "Diptera": 1},
        "family": {"Noctuidae": 2, "Geometridae": 1},
        "species": {"Noctua pronuba": 2},
        "unsure": {"unsure": 1},
        "unknown": {"unknown": 1},
    }
    assert summ.today_counts() == {
        "Noctua pronuba": 2,
        "Geometridae": 1,
        "Diptera": 1,
        "unsure": 1,
        "unknown": 1,
    }


def test_a_track_counts_in_the_interval_of_its_last_sighting_even_when_it_ends_later() -> None:
    cfg = SummaryConfig(interval_s=60, max_frame_gap_s=30)
    summ = IntervalSummarizer(cfg, run_id=1, close_delay_s=30)
    rows: list[SummaryRow] = []
    for i in range(9):  # 21:00:00 .. 21:01:20
        rows += summ.on_frame(T0 + timedelta(seconds=10 * i), 0)
    # Last seen at 21:00:55, ended by the tracker at 21:01:20: still the 21:00 interval.
    summ.on_track_finished(track(1, T0 + timedelta(seconds=55), LEP))
    # Re-identified and lost again: moves, and is never counted twice.
    summ.on_track_finished(track(2, T0 + timedelta(seconds=50), LEP))
    summ.on_track_finished(track(2, T0 + timedelta(seconds=70), LEP))
    rows += summ.on_frame(T0 + timedelta(seconds=90), 0)  # closes 21:00 (ends 21:01 + 30 s)
    assert [r.start_utc for r in rows] == [T0]
    assert rows[0].tracks == 1 and rows[0].counts["species"] == {"Noctua pronuba": 1}
    # Finishing after its interval was emitted: counted in the first open interval, not lost.
    summ.on_track_finished(track(3, T0 + timedelta(seconds=40), LEP))
    summ.on_track_finished(track(1, T0 + timedelta(seconds=55), LEP))  # already emitted: ignored
    rows = summ.finish(T0 + timedelta(seconds=95))
    assert [r.start_utc for r in rows] == [T0 + timedelta(minutes=1)]
    assert rows[0].tracks == 2  # tracks 2 and 3
    assert rows[0].end_utc == T0 + timedelta(seconds=95)
    assert summ.today_counts() == {"Noctua pronuba": 3}


def test_pause_means_the_gap_until_the_next_frame_is_not_effort() -> None:
    cfg = SummaryConfig(interval_s=600, max_frame_gap_s=120)
    times = [T0 + timedelta(seconds=10 * i) for i in range(10)]  # 0..90 s
    later = [T0 + timedelta(seconds=150 + 10 * i) for i in range(5)]  # 60 s gap, then 40 s of frames

    plain = IntervalSummarizer(cfg, run_id=1)
    rows_plain = run_all(plain, times + later)
    paused = IntervalSummarizer(cfg, run_id=1)
    for t in times:
        paused.on_frame(t, 0)
    paused.pause()
    rows_paused = run_all(paused, later)
    assert rows_plain[0].effort_s == pytest.approx(90 + 60 + 40)
    assert rows_paused[0].effort_s == pytest.approx(90 + 40)  # the paused 60 s are not effort
    assert rows_paused[0].frames_processed == rows_plain[0].frames_processed == 15


def test_tick_closes_the_paused_nights_last_interval_without_a_frame() -> None:
    cfg = SummaryConfig(interval_s=900, max_frame_gap_s=60)
    summ = IntervalSummarizer(cfg, run_id=1, close_delay_s=120)
    for i in range(12):  # 21:00:00 .. 21:00:55, then the schedule switches the trap off
        summ.on_frame(T0 + timedelta(seconds=5 * i), 0)
    summ.pause()
    assert summ.tick(T0 + timedelta(minutes=16)) == []  # 21:15 + 120 s not reached yet
    rows = summ.tick(T0 + timedelta(minutes=17))
    assert [(r.start_utc, r.frames_processed, r.effort_s) for r in rows] == [(T0, 12, pytest.approx(55.0))]
    # A late frame of that interval (clock jumped back) goes to the next open one: no second row.
    rows = summ.on_frame(T0 + timedelta(minutes=14), 0) + summ.finish(T0 + timedelta(minutes=20))
    assert [r.start_utc for r in rows] == [T0 + timedelta(minutes=15)]
    assert rows[0].frames_processed == 1 and rows[0].effort_s == 0


def test_finish_emits_the_partial_interval_ending_at_the_run_end() -> None:
    cfg = SummaryConfig(interval_s=900, max_frame_gap_s=60)
    summ = IntervalSummarizer(cfg, run_id=1)
    times = [T0 + timedelta(seconds=5 * i) for i in range(91)]  # 21:00:00 .. 21:07:30
    rows: list[SummaryRow] = []
    for i, t in enumerate(times):
        rows += summ.on_frame(t, dropped_total=i // 10)
    assert rows == []  # the interval is still open
    summ.on_track_finished(track(1, T0 + timedelta(minutes=7), LEP))
    rows = summ.finish(T0 + timedelta(minutes=7, seconds=40))
    assert len(rows) == 1
    row = rows[0]
    assert (row.start_utc, row.end_utc) == (T0, T0 + timedelta(minutes=7, seconds=40))
    assert row.effort_s == pytest.approx(450.0)
    assert row.frames_processed == 91
    assert row.frames_dropped == 9
    assert row.tracks == 1
    assert summ.finish(T0 + timedelta(minutes=8)) == []  # nothing left


def test_replay_gives_identical_summaries_and_they_store_once(tmp_path: Path) -> None:
    cfg = SummaryConfig(interval_s=60, max_frame_gap_s=30)
    times = frame_times(seed=11)

    def replay() -> list[SummaryRow]:
        summ = IntervalSummarizer(cfg, run_id=1, tz="Europe/Berlin", close_delay_s=20)
        rows: list[SummaryRow] = []
        for i, t in enumerate(times):
            rows += summ.on_frame(t, dropped_total=i // 7)
            if i % 13 == 5:
                summ.on_track_finished(track(100 + i, t - timedelta(seconds=3), LEP if i % 2 else None))
        return rows + summ.finish(times[-1] + timedelta(seconds=2))

    first, second = replay(), replay()
    assert first == second
    assert [r.params() for r in first] == [r.params() for r in second]
    assert sum(r.tracks for r in first) == sum(1 for i in range(len(times)) if i % 13 == 5)

    db = Database(tmp_path / "t.db")
    run = db.start_run(RunInfo(device_id="trap-01", software_version="0", config_json="{}", source="test"))
    assert run == 1
    for row in first + second:  # the replay stored into the same run replaces, never duplicates
        store_summary(db, row)
    db.flush()
    db.close()
    conn = connect_reader(tmp_path / "t.db")
    stored = [summary_from_db(r) for r in conn.execute("SELECT * FROM summaries ORDER BY start_utc")]
    conn.close()
    assert stored == first
    payload = first[0].to_payload({"Noctua pronuba": 2})
    assert json.loads(json.dumps(payload)) == payload
    assert payload["today"] == {"Noctua pronuba": 2} and payload["start"].endswith("Z")
    assert payload["today_total"] == 2


def test_today_counts_reset_at_local_midnight() -> None:
    cfg = SummaryConfig(interval_s=900, max_frame_gap_s=60)
    summ = IntervalSummarizer(cfg, run_id=1, tz="Europe/Berlin")
    before = datetime(2026, 7, 1, 21, 59, 0, tzinfo=timezone.utc)  # 23:59 in Berlin
    summ.on_frame(before, 0)
    summ.on_track_finished(track(1, before, LEP))
    assert summ.today_counts() == {"Noctua pronuba": 1}
    summ.on_frame(before + timedelta(minutes=2), 0)  # 00:01 in Berlin: a new day
    assert summ.today_counts() == {}
    summ.on_track_finished(track(2, before + timedelta(minutes=2)))
    assert summ.today_counts() == {"unsure": 1}


def test_seed_today_counts_earlier_runs_of_the_same_day(tmp_path: Path) -> None:
    db = Database(tmp_path / "t.db")
    info = RunInfo(device_id="trap-01", software_version="0", config_json="{}", source="test")
    first_run = db.start_run(info)
    yesterday = datetime(2026, 7, 1, 21, 30, tzinfo=timezone.utc)  # 23:30 in Berlin, the day before
    for tid, last, lineage in (
        (1, yesterday, LEP),
        (2, T0 + timedelta(hours=2), LEP),
        (3, T0 + timedelta(hours=3), None),
    ):
        db.upsert_track(track(tid, last, lineage))
    db.upsert_track(track(4, T0 + timedelta(hours=2), LEP, status="discarded"))
    # open when its run was killed (settled 'ended', never counted by it): the next run counts it
    # when it finishes; one a clean stop closed was counted by that run
    uncounted = ResumeState(appearance=None, embedding=None)
    counted = ResumeState(appearance=None, embedding=None, counted=True)
    db.upsert_track(
        dataclasses.replace(track(5, T0 + timedelta(hours=3), LEP), resume_json=uncounted.to_json())
    )
    db.upsert_track(
        dataclasses.replace(track(6, T0 + timedelta(hours=3), None), resume_json=counted.to_json())
    )
    second_run = db.start_run(info)
    db.flush()
    summ = IntervalSummarizer(SummaryConfig(), run_id=second_run, tz="Europe/Berlin")
    summ.seed_today(db._reader_conn(), T0 + timedelta(hours=4))
    db.close()
    assert first_run != second_run
    assert summ.today_counts() == {"Noctua pronuba": 1, "unsure": 2}


def test_counts_per_size_class_beside_the_levels() -> None:
    """Each counted track once more under the pseudo-level "size_class"; discarded ones never."""
    summ = IntervalSummarizer(SummaryConfig(interval_s=600, max_frame_gap_s=60), run_id=1, close_delay_s=0)
    for i in range(50):
        summ.on_frame(T0 + timedelta(seconds=10 * i), 0)
    summ.on_track_finished(track(1, T0 + timedelta(minutes=2), LEP, size_class="large"))
    summ.on_track_finished(track(2, T0 + timedelta(minutes=3), LEP, size_class="small"))
    summ.on_track_finished(track(3, T0 + timedelta(minutes=4), size_class="small"))  # unsure, still sized
    summ.on_track_finished(track(4, T0 + timedelta(minutes=5), LEP, status="discarded", size_class="large"))
    summ.on_track_finished(track(5, T0 + timedelta(minutes=5), {"order": "Diptera"}))  # no size: not there
    (row,) = summ.on_frame(T0 + timedelta(minutes=10), 0)
    assert row.tracks == 4
    assert row.counts["size_class"] == {"large": 1, "small": 2}
    assert row.counts["order"] == {"Lepidoptera": 2, "Diptera": 1} and row.counts["unsure"] == {"unsure": 1}


def test_provisional_rows_are_the_open_intervals_so_far_and_the_closed_row_replaces_them(
    tmp_path: Path,
) -> None:
    """What a SIGKILL leaves: after each frame the changed open intervals as rows ending at the latest
    frame; the closed row later takes their place (same run and start), and an interval emptied by a
    track that moved on gets an empty row instead of keeping the stale count."""
    cfg = SummaryConfig(interval_s=60, max_frame_gap_s=30)
    summ = IntervalSummarizer(cfg, run_id=1, close_delay_s=30)
    db = Database(tmp_path / "t.db")
    run = db.start_run(RunInfo(device_id="t", software_version="0", config_json="{}", source="x"))
    assert run == 1
    for i in range(4):  # 21:00:00 .. 21:00:30
        summ.on_frame(T0 + timedelta(seconds=10 * i), 0)
    summ.on_track_finished(track(1, T0 + timedelta(seconds=30), LEP))
    (row,) = summ.provisional()
    assert (row.start_utc, row.end_utc, row.effort_s, row.frames_processed, row.tracks) == (
        T0,
        T0 + timedelta(seconds=30),
        30.0,
        4,
        1,
    )
    assert summ.provisional() == []  # nothing changed since
    store_summary(db, row)
    # the track is re-identified and lost again in the next interval: the first interval is left
    # with frames and effort but no track; its closed row replaces the provisional one
    for i in range(4, 9):  # .. 21:01:20, the first interval stays open (closes at 21:01:30)
        assert summ.on_frame(T0 + timedelta(seconds=10 * i), 0) == []
    summ.on_track_finished(track(1, T0 + timedelta(seconds=65), LEP))
    for row in summ.provisional():
        store_summary(db, row)
    closed = summ.on_frame(T0 + timedelta(seconds=90), 0)
    assert [r.start_utc for r in closed] == [T0] and closed[0].tracks == 0
    for row in closed:
        store_summary(db, row)
    assert db.flush()
    conn = connect_reader(db.path)
    try:
        stored = conn.execute(
            "SELECT start_utc, effort_s, tracks FROM summaries ORDER BY start_utc"
        ).fetchall()
    finally:
        conn.close()
        db.close()
    assert [(r[1], r[2]) for r in stored] == [(60.0, 0), (20.0, 1)]  # one row per interval, track once


# ---------------------------------------------------------------- properties stated for issue 26
# (mutation testing: each states a promise of the module that a small change to its code breaks)

MINUTE = SummaryConfig(interval_s=60, max_frame_gap_s=30)


def test_summary_message_carries_every_field_of_its_row_sorted_and_rounded() -> None:
    """The MQTT `summary` message is a contract with dashboards: exactly these keys, counts and today
    sorted, seconds rounded to the microsecond."""
    row = SummaryRow(
        run_id=7,
        start_utc=T0,
        end_utc=T0 + timedelta(minutes=15),
        effort_s=123.4567891,
        frames_processed=42,
        frames_dropped=3,
        tracks=5,
        counts={"species": {"Noctua pronuba": 1, "Agrotis exclamationis": 2}, "order": {"Lepidoptera": 3}},
        max_insects=4,
    )
    payload = row.to_payload({"Noctua pronuba": 2, "Agrotis exclamationis": 1})
    assert payload == {
        "run_id": 7,
        "start": "2026-07-01T21:00:00.000000Z",
        "end": "2026-07-01T21:15:00.000000Z",
        "interval_s": 900.0,
        "effort_s": 123.456789,
        "frames_processed": 42,
        "frames_dropped": 3,
        "tracks": 5,
        "max_insects": 4,
        "counts": {"order": {"Lepidoptera": 3}, "species": {"Agrotis exclamationis": 2, "Noctua pronuba": 1}},
        "today": {"Agrotis exclamationis": 1, "Noctua pronuba": 2},
        "today_total": 3,
    }
    assert list(payload["counts"]) == ["order", "species"]
    assert list(payload["counts"]["species"]) == ["Agrotis exclamationis", "Noctua pronuba"]
    assert list(payload["today"]) == ["Agrotis exclamationis", "Noctua pronuba"]
    short = dataclasses.replace(row, end_utc=T0 + timedelta(seconds=61.2345678), max_insects=None)
    assert short.to_payload({})["interval_s"] == 61.234568
    assert short.to_payload({})["max_insects"] is None and short.to_payload({})["today_total"] == 0


def test_counts_text_is_sorted_compact_and_keeps_names_as_written() -> None:
    """The same counts give the same text whatever their order (a replay compares equal), and a
    species name with a diacritic is stored as written, not as \\u escapes."""
    a = {"species": {"Æshna cyanea": 1, "Aeshna mixta": 2}, "order": {"Odonata": 3}}
    b = {"order": {"Odonata": 3}, "species": {"Aeshna mixta": 2, "Æshna cyanea": 1}}
    text = '{"order":{"Odonata":3},"species":{"Aeshna mixta":2,"Æshna cyanea":1}}'
    assert counts_json(a) == counts_json(b) == text
    assert SummaryRow(1, T0, T0, 0.0, 0, 0, 3, a).counts_json() == text


def test_a_summary_reads_back_from_any_mapping_of_its_columns() -> None:
    """summary_from_db takes a plain dict as well as an sqlite3.Row (whose keys ignore case), and a
    row stored before `max_insects` existed reads back with None."""
    row = SummaryRow(3, T0, T0 + timedelta(minutes=15), 812.5, 160, 2, 4, {"order": {"Diptera": 4}}, 6)
    columns = [
        "run_id",
        "start_utc",
        "end_utc",
        "effort_s",
        "frames_processed",
        "frames_dropped",
        "tracks",
        "counts_json",
        "max_insects",
    ]
    stored = dict(zip(columns, row.params(), strict=True))
    assert summary_from_db(stored) == row
    del stored["max_insects"]
    assert summary_from_db(stored) == dataclasses.replace(row, max_insects=None)


def test_lineage_from_a_plain_database_mapping() -> None:
    lineage_row = {"lineage_json": json.dumps(LEP), "level": "species", "label": "Noctua pronuba"}
    assert track_lineage(lineage_row) == LEP
    old_row = {"lineage_json": None, "level": "family", "label": "Noctuidae"}  # before lineage existed
    assert track_lineage(old_row) == {"family": "Noctuidae"}
    broken = {"lineage_json": "{not json", "level": "order", "label": "Diptera"}
    assert track_lineage(broken) == {"order": "Diptera"}
    assert track_lineage({"lineage_json": None, "level": "species", "label": "background"}) == {}


class _NoOffset(tzinfo):
    """A tzinfo that does not know its offset: as unusable as none."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None


@pytest.mark.parametrize("moment", [datetime(2026, 7, 1, 21), datetime(2026, 7, 1, 21, tzinfo=_NoOffset())])
def test_a_timestamp_without_a_known_offset_is_refused_by_name(moment: datetime) -> None:
    summ = IntervalSummarizer(MINUTE, run_id=1)
    with pytest.raises(
        StorageError, match=r"^summary: timestamp 2026-07-01T21:00:00: expected a timezone-aware"
    ):
        summ.on_frame(moment, 0)


def test_close_delay_defaults_to_two_minutes_and_cannot_be_negative() -> None:
    with pytest.raises(StorageError, match=r"^summary: close_delay_s: expected >= 0, got -1"):
        IntervalSummarizer(MINUTE, run_id=1, close_delay_s=-1)
    summ = IntervalSummarizer(SummaryConfig(interval_s=60, max_frame_gap_s=600), run_id=1)
    summ.on_frame(T0, 0)
    # the interval [21:00, 21:01) closes with the first frame at least 120 s past its end
    assert summ.on_frame(T0 + timedelta(seconds=179.999999), 0) == []
    assert [r.start_utc for r in summ.on_frame(T0 + timedelta(seconds=180), 0)] == [T0]


def test_dropped_frames_count_from_zero_and_survive_a_counter_reset() -> None:
    """The capture thread's drop counter as the loop reports it: 5 already at the first frame, then
    7, then 2 after the capture restarted (a new counter): 5 + 2 + 2 frames dropped."""
    summ = IntervalSummarizer(MINUTE, run_id=1)
    for i, dropped_total in enumerate((5, 7, 2)):
        summ.on_frame(T0 + timedelta(seconds=i), dropped_total)
    (row,) = summ.finish(T0 + timedelta(seconds=3))
    assert row.frames_dropped == 9


def test_max_insects_is_the_busiest_frame_and_zero_is_not_unknown() -> None:
    summ = IntervalSummarizer(MINUTE, run_id=1)
    summ.on_frame(T0, 0, insects=0)
    summ.on_frame(T0 + timedelta(seconds=1), 0)  # the loop did not say
    (row,) = summ.provisional()
    assert row.max_insects == 0
    summ.on_frame(T0 + timedelta(seconds=2), 0, insects=3)
    summ.on_frame(T0 + timedelta(seconds=3), 0, insects=1)
    assert [r.max_insects for r in summ.finish(T0 + timedelta(seconds=4))] == [3]
    silent = IntervalSummarizer(MINUTE, run_id=1)
    silent.on_frame(T0, 0)
    assert [r.max_insects for r in silent.finish(T0)] == [None]


def test_provisional_rows_follow_every_change_of_an_open_interval() -> None:
    """A frame, effort split into the previous interval, or a track moving out: each changes a
    stored row's numbers, so each must come back from provisional(); an unchanged interval does
    not, and one unchanged before a changed one does not hide it."""
    summ = IntervalSummarizer(MINUTE, run_id=1, close_delay_s=60)
    summ.on_frame(T0 + timedelta(seconds=5), 0)
    assert [(r.start_utc, r.frames_processed, r.effort_s) for r in summ.provisional()] == [
        (T0, 1, 0.0)
    ]  # one frame: no effort yet, still a row
    summ.on_frame(T0 + timedelta(seconds=45), 0)  # 40 s later: longer than max_frame_gap_s
    assert [(r.frames_processed, r.effort_s) for r in summ.provisional()] == [(2, 0.0)]
    summ.on_frame(T0 + timedelta(seconds=70), 0)  # 25 s: 15 s of it in the first interval
    rows = summ.provisional()
    assert [(r.start_utc, r.effort_s, r.frames_processed) for r in rows] == [
        (T0, 15.0, 2),
        (T0 + timedelta(seconds=60), 10.0, 1),
    ]
    summ.on_frame(T0 + timedelta(seconds=72), 0)  # only the second interval changes
    assert [(r.start_utc, r.effort_s) for r in summ.provisional()] == [(T0 + timedelta(seconds=60), 12.0)]
    summ.on_track_finished(track(1, T0 + timedelta(seconds=40), LEP))
    assert [(r.start_utc, r.tracks) for r in summ.provisional()] == [(T0, 1)]
    summ.on_track_finished(track(1, T0 + timedelta(seconds=71), LEP))  # re-identified, lost again
    assert [(r.start_utc, r.tracks) for r in summ.provisional()] == [(T0, 0), (T0 + timedelta(seconds=60), 1)]


def test_a_provisional_row_before_any_frame_has_a_positive_length() -> None:
    """A track settled before the run's first frame (a killed run's, edge/restart.py)."""
    summ = IntervalSummarizer(MINUTE, run_id=1)
    summ.on_track_finished(track(1, T0 + timedelta(seconds=30), LEP))
    (row,) = summ.provisional()
    assert (row.start_utc, row.end_utc, row.tracks) == (T0, T0 + timedelta(microseconds=1), 1)


def test_an_interval_with_only_tracks_or_only_effort_gets_its_row() -> None:
    """No frame fell in [21:01, 21:02): a track that ended there still counts there; and with frames
    rarer than intervals, an interval that holds only effort still adds its effort to the day."""
    tracks_only = IntervalSummarizer(MINUTE, run_id=1, close_delay_s=0)
    tracks_only.on_frame(T0 + timedelta(seconds=50), 0)
    tracks_only.on_track_finished(track(1, T0 + timedelta(seconds=70), LEP))
    rows = tracks_only.finish(T0 + timedelta(seconds=200))
    assert [(r.start_utc, r.frames_processed, r.tracks) for r in rows] == [
        (T0, 1, 0),
        (T0 + timedelta(seconds=60), 0, 1),
    ]
    rare = IntervalSummarizer(SummaryConfig(interval_s=60, max_frame_gap_s=300), run_id=1, close_delay_s=300)
    rare.on_frame(T0 + timedelta(seconds=50), 0)
    rare.on_frame(T0 + timedelta(seconds=130), 0)
    assert [(r.start_utc, r.effort_s) for r in rare.provisional()] == [
        (T0, 10.0),
        (T0 + timedelta(seconds=60), 60.0),
        (T0 + timedelta(seconds=120), 10.0),
    ]
    closed = rare.finish(T0 + timedelta(seconds=140))
    assert [(r.start_utc, r.frames_processed, r.effort_s) for r in closed] == [
        (T0, 1, 10.0),
        (T0 + timedelta(seconds=60), 0, 60.0),
        (T0 + timedelta(seconds=120), 1, 10.0),
    ]


def test_an_emptied_interval_gives_no_row_unless_a_provisional_one_was_stored() -> None:
    """A track that moved on leaves its first interval empty: no row for it (nothing to replace),
    the rows after it still come; but if that interval's provisional row was stored, an empty row
    replaces it, or the track would be counted twice."""

    def night(store_provisional: bool) -> list[SummaryRow]:
        summ = IntervalSummarizer(MINUTE, run_id=1, close_delay_s=0)
        summ.on_frame(T0 + timedelta(seconds=50), 0)
        summ.on_track_finished(track(1, T0 + timedelta(seconds=70), LEP))  # no frame in 21:01
        if store_provisional:
            summ.provisional()
        summ.on_track_finished(track(1, T0 + timedelta(seconds=150), LEP))
        return summ.finish(T0 + timedelta(seconds=170))

    assert [(r.start_utc, r.tracks) for r in night(False)] == [(T0, 0), (T0 + timedelta(seconds=120), 1)]
    assert [(r.start_utc, r.tracks) for r in night(True)] == [
        (T0, 0),
        (T0 + timedelta(seconds=60), 0),
        (T0 + timedelta(seconds=120), 1),
    ]


def test_the_last_row_ends_at_the_run_end_but_never_before_its_last_frame() -> None:
    summ = IntervalSummarizer(MINUTE, run_id=1)
    for s in (10, 50, 20):  # the clock stepped back 30 s within the interval
        summ.on_frame(T0 + timedelta(seconds=s), 0)
    (row,) = summ.finish(T0 + timedelta(seconds=15))  # a run end before the last frame
    assert row.end_utc == T0 + timedelta(seconds=50)
    at_boundary = IntervalSummarizer(MINUTE, run_id=1)
    at_boundary.on_frame(T0 + timedelta(seconds=30), 0)
    at_boundary.on_frame(T0 + timedelta(seconds=60), 0)  # the last frame opens 21:01
    rows = at_boundary.finish(T0 + timedelta(seconds=60))
    assert [(r.start_utc, r.end_utc) for r in rows] == [
        (T0, T0 + timedelta(seconds=60)),
        (T0 + timedelta(seconds=60), T0 + timedelta(seconds=60, microseconds=1)),  # shortest positive
    ]
    # a summarizer goes on after finish: the next frame starts a new stretch, no effort across the gap
    at_boundary.on_frame(T0 + timedelta(seconds=65), 0)
    assert [(r.frames_processed, r.effort_s) for r in at_boundary.finish(T0 + timedelta(seconds=66))] == [
        (1, 0.0)
    ]


def test_late_data_goes_to_its_own_interval_if_open_else_to_the_first_open_one() -> None:
    summ = IntervalSummarizer(MINUTE, run_id=1, close_delay_s=30)
    summ.on_frame(T0 + timedelta(seconds=10), 0)
    assert [r.start_utc for r in summ.on_frame(T0 + timedelta(seconds=130), 0)] == [T0]  # 21:00 closed
    summ.on_track_finished(track(1, T0 + timedelta(seconds=100), LEP))  # 21:01 never emitted: its own
    summ.on_track_finished(track(2, T0 + timedelta(seconds=20), LEP))  # 21:00 emitted: the first open
    rows = summ.finish(T0 + timedelta(seconds=140))
    assert [(r.start_utc, r.tracks) for r in rows] == [
        (T0 + timedelta(seconds=60), 2),
        (T0 + timedelta(seconds=120), 0),
    ]
    late = IntervalSummarizer(MINUTE, run_id=1, close_delay_s=30)
    late.on_frame(T0 + timedelta(seconds=10), 0)
    late.on_frame(T0 + timedelta(seconds=130), 0)
    late.on_track_finished(track(2, T0 + timedelta(seconds=20), LEP))  # 21:00 emitted, 21:02 open
    assert [(r.start_utc, r.tracks) for r in late.finish(T0 + timedelta(seconds=140))] == [
        (T0 + timedelta(seconds=120), 1)
    ]


def test_today_moves_a_recounted_track_and_never_goes_back_a_day() -> None:
    """A track re-identified and lost again with another answer is counted once, under its new label;
    a late track from yesterday does not turn today back into yesterday."""
    summ = IntervalSummarizer(MINUTE, run_id=1, tz="Europe/Berlin")
    before = datetime(2026, 7, 1, 21, 58, 0, tzinfo=timezone.utc)  # 23:58 in Berlin
    summ.on_frame(before, 0)
    summ.on_track_finished(track(1, before, LEP))
    summ.on_track_finished(track(1, before + timedelta(seconds=20), {"order": "Diptera"}))
    assert summ.today_counts() == {"Diptera": 1}
    summ.on_frame(before + timedelta(minutes=3), 0)  # 00:01 in Berlin
    summ.on_track_finished(track(2, before + timedelta(seconds=30), LEP))  # finished late, at 23:58
    assert summ.today_counts() == {}


def test_seed_today_starts_at_local_midnight_and_merges_labels_counted_alike(tmp_path: Path) -> None:
    """At UTC+14 the local day starts ten hours before the UTC one; `background` and no label are
    both counted as unsure."""
    zone = "Pacific/Kiritimati"
    now = datetime(2026, 7, 1, 10, 30, tzinfo=timezone.utc)  # 00:30 on 2 July there
    db = Database(tmp_path / "t.db")
    info = RunInfo(device_id="trap-01", software_version="0", config_json="{}", source="test")
    db.start_run(info)
    db.upsert_track(track(1, now - timedelta(minutes=15), LEP))  # 00:15 local: today
    db.upsert_track(track(2, now - timedelta(minutes=45), LEP))  # 23:45 local, 1 July: yesterday
    db.upsert_track(track(3, now - timedelta(minutes=20)))  # no answer
    db.upsert_track(track(4, now - timedelta(minutes=10), label="background", level="species"))
    second_run = db.start_run(info)
    db.flush()
    summ = IntervalSummarizer(SummaryConfig(), run_id=second_run, tz=zone)
    summ.seed_today(db._reader_conn(), now)
    db.close()
    assert summ.today_counts() == {"Noctua pronuba": 1, "unsure": 2}


def test_state_stays_bounded_over_many_nights() -> None:
    """Months unattended: today's totals keep yesterday and today only, and per-track bookkeeping is
    dropped once a track's interval closed (a day later for the ids already counted)."""
    summ = IntervalSummarizer(MINUTE, run_id=1, close_delay_s=0)
    tid = 0
    for night in range(10):
        start = T0 + timedelta(days=night)
        for s in range(0, 600, 10):
            summ.on_frame(start + timedelta(seconds=s), 0)
            if s % 100 == 0:
                tid += 1
                summ.on_track_finished(track(tid, start + timedelta(seconds=s), LEP))
    summ.on_frame(T0 + timedelta(days=9, seconds=700), 0)  # closes the last night's intervals
    today = (T0 + timedelta(days=9)).date()
    assert set(summ._today) == {today - timedelta(days=1), today}
    assert {day for day, _ in summ._today_of.values()} == {today - timedelta(days=1), today}
    assert summ._where == {}
    assert len(summ._counted) <= 12  # the last night's 6 and the night before's


MOTHS = Taxonomy(
    levels=("order", "family", "species"),
    parents={"family": {"Noctuidae": "Lepidoptera"}, "species": {"Noctua pronuba": "Noctuidae"}},
)


def crop(answers: dict[str, str | None], unknown: bool = False) -> Classification:
    """One crop's classification: per level its label (None: abstained); the deepest named answer."""
    levels = {
        lv: LevelPrediction(lv, label, label or "x", 0.9 if label else 0.2, ((label or "x", 0.9),))
        for lv, label in answers.items()
    }
    named = [lv for lv, label in answers.items() if label is not None]
    level = named[-1] if named else None
    return Classification(
        levels,
        level,
        answers[level] if level else None,
        0.9,
        unknown=unknown,
        open_set_distance=2.0 if unknown else 0.5,
    )


def test_a_snapshot_crop_counts_as_a_finished_track_with_its_answer_would() -> None:
    """DESIGN.md's outcome table for time-lapse snapshots: a named crop counts at its level and every
    level above (from the taxonomy, also where a coarser head abstained); an open-set crop as
    unknown; an abstained crop or a third-party model's `background` as unsure."""
    named = crop({"order": None, "family": "Noctuidae", "species": "Noctua pronuba"})
    assert crop_lineage(named, MOTHS) == LEP
    assert crop_lineage(named, None) == {"species": "Noctua pronuba"}  # a flat model: no ancestors
    assert crop_lineage(crop({"order": "Lepidoptera", "family": None, "species": None}), MOTHS) == {
        "order": "Lepidoptera"
    }
    odd = crop({"order": "Lepidoptera", "family": "Noctuidae", "species": "Noctua pronuba"}, unknown=True)
    assert crop_lineage(odd, MOTHS) == {"unknown": "unknown"}
    assert crop_lineage(crop({"order": None, "family": None, "species": None}), MOTHS) == {}
    assert crop_lineage(crop({"species": "background"}), None) == {}
    assert crop_lineage(None, MOTHS) == {}
    counts = level_counts(
        (crop_lineage(c, MOTHS), "small")
        for c in (named, odd, crop({"order": None, "family": None, "species": None}))
    )
    assert counts == {
        "family": {"Noctuidae": 1},
        "order": {"Lepidoptera": 1},
        "size_class": {"small": 3},
        "species": {"Noctua pronuba": 1},
        "unknown": {"unknown": 1},
        "unsure": {"unsure": 1},
    }
