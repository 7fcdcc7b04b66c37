"""Interval summaries: effort, frames and finished tracks per clock-aligned interval.

Expected numbers are computed here from the frame list with a different method (overlap of
each counted gap with each interval) than the summarizer's (walking boundaries).
"""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path

import pytest

from edge.config import SummaryConfig
from edge.intervals import IntervalSummarizer, SummaryRow, store_summary, summary_from_db
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
