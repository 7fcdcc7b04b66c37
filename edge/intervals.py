"""Interval summaries: how long the trap really watched, what it saw, per clock-aligned interval.

The loop feeds every processed frame (`on_frame`) and every finished track (`on_track_finished`);
the summarizer hands back one `SummaryRow` per interval once that interval can no longer change.
Everything runs on frame timestamps, never the wall clock, so a replayed night yields exactly the
summaries of the live night.

Definitions (the export and the MQTT `summary` message rely on them):

- Intervals are `[k * interval_s, (k + 1) * interval_s)` since the UTC epoch, so 15-minute
  intervals start at :00, :15, :30 and :45 and two traps' intervals line up.
- Effort is the sum of the gaps between consecutive processed frames; a gap longer than
  `max_frame_gap_s` (a camera outage, a stalled pipeline) counts as nothing, and so does the gap
  after `pause()` (the schedule switched the trap off). A gap that crosses an interval boundary is
  split exactly at the boundary (integer microseconds, so the parts add up to the whole).
- `frames_processed` counts frames whose timestamp lies in the interval; `frames_dropped` the
  increase of the capture thread's drop counter reported with those frames.
- Counts come from finished tracks (status 'ended'; 'discarded' never counts), attributed to the
  interval of the track's `last_utc`. Each track adds 1 at every level of its lineage
  (`{"order": {"Lepidoptera": 1}, "family": {...}, "species": {...}}`); a track whose vote
  abstained everywhere (no lineage, no label) is counted under the reserved pseudo-level
  `"unsure"` as `{"unsure": {"unsure": n}}`, and one the open set called `unknown` (an insect
  unlike every taxon of the model) as `{"unknown": {"unknown": n}}`. `tracks` is the total, unsure
  and unknown included. The same
  tracks are counted once more by size under the reserved pseudo-level `"size_class"`
  (`{"size_class": {"small": 3, "large": 1}}`), a biomass proxy (config `size`).
- The tracker ends a track some frames after it was last seen, so an interval is closed only when
  a frame at least `close_delay_s` past its end arrives (or at `finish`). A track that finishes
  later still, or a frame whose clock went backwards into a closed interval, is counted in the
  first interval still open: late data is never lost and never rewrites an emitted row.
- Nothing lost on a kill: after each frame the loop stores the open intervals that changed as
  provisional rows (`provisional()`: the same columns, ending at the latest frame), never
  published; the closed row replaces its provisional one (same run and start). A SIGKILL thus
  loses only what the database writer had not committed yet, and the killed run's effort stays.
- An interval without frames, effort and tracks yields no row (unless a provisional row was stored
  for it: then an empty row replaces that, so a track that moved on is not counted there twice).
  An interval without frames can still carry effort when `max_frame_gap_s` > `interval_s` (frames
  rarer than intervals); it then gets a row, so the day's effort adds up.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from edge.classify.taxonomy import Taxonomy, lineage_of
from edge.classify.types import UNKNOWN, UNSURE, Classification, count_key, names_a_taxon
from edge.config import SummaryConfig
from edge.errors import StorageError
from edge.store.db import Database
from edge.store.schema import TrackRow, parse_utc, utc_iso

SIZE_CLASS = "size_class"  # reserved pseudo-level: counts per size class (config `size`)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = 1_000_000

_UPSERT_SUMMARY = (
    "INSERT INTO summaries (run_id, start_utc, end_utc, effort_s, frames_processed, frames_dropped, "
    "tracks, counts_json, max_insects) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(run_id, start_utc) DO UPDATE SET end_utc = excluded.end_utc, "
    "effort_s = excluded.effort_s, frames_processed = excluded.frames_processed, "
    "frames_dropped = excluded.frames_dropped, tracks = excluded.tracks, counts_json = excluded.counts_json, "
    "max_insects = excluded.max_insects"
)


def _to_us(moment: datetime) -> int:
    """Microseconds since the epoch: exact integer arithmetic for splitting gaps."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise StorageError(f"summary: timestamp {moment.isoformat()}: expected a timezone-aware datetime")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def track_lineage(track: TrackRow | Mapping[str, Any]) -> dict[str, str]:
    """The track's {level: label} at its level and above; {} when the vote abstained everywhere.

    A label that names no taxon (a third-party model's `background`) is left out: DESIGN.md counts
    such a track as `unsure`, not as a taxon called "background".
    Accepts a TrackRow or a database row (mapping with lineage_json, level, label). Rows written
    before lineage existed fall back to their own level and label.
    """
    if isinstance(track, TrackRow):
        raw, level, label = track.lineage_json, track.level, track.label
    else:
        raw, level, label = track["lineage_json"], track["level"], track["label"]
    lineage: dict[str, str] = {}
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            lineage = {str(k): str(v) for k, v in parsed.items() if v is not None}
    elif isinstance(raw, Mapping):
        lineage = {str(k): str(v) for k, v in raw.items() if v is not None}
    if not lineage and level and label:
        lineage = {level: label}
    return {lv: lab for lv, lab in lineage.items() if names_a_taxon(lab)}


def counted_lineage(track: TrackRow) -> dict[str, str]:
    """What a finished track adds to the counts: its named lineage; `{"unknown": "unknown"}` for a
    track the open set found unlike every taxon (its own row, as unsure has: DESIGN.md); {} for unsure."""
    lineage = track_lineage(track)
    if not lineage and track.label == UNKNOWN:
        return {UNKNOWN: UNKNOWN}
    return lineage


def crop_lineage(classification: Classification | None, taxonomy: Taxonomy | None) -> dict[str, str]:
    """What one crop of a time-lapse snapshot adds to its counts, by the rule a finished track's
    answer follows (DESIGN.md's outcome table): `{"unknown": "unknown"}` for a crop the open set
    found unlike every taxon; its taxon and every level above it when it names one; {} (unsure)
    when every head abstained or its label names no taxon (a third-party model's `background`)."""
    if classification is None:
        return {}
    if classification.unknown:
        return {UNKNOWN: UNKNOWN}
    level, label = classification.level, classification.label
    if level is None or label is None:
        return {}
    return {lv: lab for lv, lab in lineage_of(taxonomy, level, label).items() if names_a_taxon(lab)}


def level_counts(insects: Iterable[tuple[Mapping[str, str], str | None]]) -> dict[str, dict[str, int]]:
    """{level: {label: n}} (sorted) of insects given as (lineage, size class): each adds 1 at every
    level of its lineage, or under {"unsure": {"unsure": n}} without one, and 1 under its size class
    (see the module docstring). The summaries count tracks so, the time-lapse snapshots crops."""
    counts: dict[str, dict[str, int]] = {}

    def add(level: str, label: str) -> None:
        per_level = counts.setdefault(level, {})
        per_level[label] = per_level.get(label, 0) + 1

    for lineage, size_class in insects:
        for level, label in lineage.items() if lineage else ((UNSURE, UNSURE),):
            add(level, label)
        if size_class is not None:
            add(SIZE_CLASS, size_class)
    return {level: dict(sorted(labels.items())) for level, labels in sorted(counts.items())}


def counts_json(counts: Mapping[str, Mapping[str, int]]) -> str:
    """Sorted, compact JSON: the same counts always give the same text (replays compare equal)."""
    return json.dumps(counts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class SummaryRow:
    """One closed interval; `params()` are the values for the `summaries` table.

    counts: {level: {label: finished tracks}}, plus {"unsure": {"unsure": n}} for tracks with no
    answer at any level (see the module docstring).
    max_insects: the most insects seen in one frame of the interval (one per track); None when
    the loop did not say (rows written before it did).
    """

    run_id: int
    start_utc: datetime
    end_utc: datetime
    effort_s: float
    frames_processed: int
    frames_dropped: int
    tracks: int
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    max_insects: int | None = None

    def counts_json(self) -> str:
        return counts_json(self.counts)

    def params(self) -> tuple[Any, ...]:
        return (
            int(self.run_id),
            utc_iso(self.start_utc),
            utc_iso(self.end_utc),
            float(self.effort_s),
            int(self.frames_processed),
            int(self.frames_dropped),
            int(self.tracks),
            self.counts_json(),
            None if self.max_insects is None else int(self.max_insects),
        )

    def to_payload(self, today: Mapping[str, int]) -> dict[str, Any]:
        """The MQTT `summary` message: this interval, plus today's running totals per deepest label.

        (run_id, start) identifies the interval, so a consumer can drop a redelivered message.
        """
        return {
            "run_id": int(self.run_id),
            "start": utc_iso(self.start_utc),
            "end": utc_iso(self.end_utc),
            "interval_s": round((self.end_utc - self.start_utc).total_seconds(), 6),
            "effort_s": round(float(self.effort_s), 6),
            "frames_processed": int(self.frames_processed),
            "frames_dropped": int(self.frames_dropped),
            "tracks": int(self.tracks),
            "max_insects": None if self.max_insects is None else int(self.max_insects),
            "counts": {level: dict(sorted(labels.items())) for level, labels in sorted(self.counts.items())},
            "today": dict(sorted(today.items())),
            "today_total": int(sum(today.values())),  # what a dashboard shows first, whatever the model
        }


@dataclass
class _Open:
    """An interval still accumulating."""

    effort_us: int = 0
    frames: int = 0
    dropped: int = 0
    last_frame_us: int | None = None
    tracks: dict[int, TrackRow] = field(default_factory=dict)
    max_insects: int | None = None
    changed: bool = True  # since the last provisional row
    stored: bool = False  # a provisional row of it is in the database


class IntervalSummarizer:
    """Accumulates effort, frames and finished tracks into clock-aligned intervals."""

    def __init__(
        self, cfg: SummaryConfig, run_id: int, tz: str = "UTC", *, close_delay_s: float = 120.0
    ) -> None:
        """close_delay_s: how long past an interval's end its tracks may still finish (the tracker
        ends a track after max_misses frames or tracker.max_gap_s); the interval closes after it."""
        if close_delay_s < 0:
            raise StorageError(f"summary: close_delay_s: expected >= 0, got {close_delay_s}")
        self.run_id = int(run_id)
        self.zone = ZoneInfo(tz)
        self._interval_us = round(cfg.interval_s * _US)
        self._max_gap_us = round(cfg.max_frame_gap_s * _US)
        self._delay_us = round(close_delay_s * _US)
        self._open: dict[int, _Open] = {}  # by interval start (us)
        self._closed_until = -(2**62)  # intervals starting before this are emitted
        self._last_frame_us: int | None = None
        self._paused = False
        self._dropped_seen = 0
        self._counted: dict[int, int] = {}  # track id -> when its row was emitted (frame time, us)
        self._where: dict[int, int] = {}  # track id -> start of the open interval holding it
        self._today: dict[date, dict[str, int]] = {}
        self._today_of: dict[int, tuple[date, str]] = {}  # track id -> (day, label) it was counted as
        self._latest_us: int | None = None

    # ------------------------------------------------------------ feeding

    def on_frame(self, ts: datetime, dropped_total: int, insects: int | None = None) -> list[SummaryRow]:
        """Account one processed frame; returns the rows of intervals this frame closed (oldest first).

        dropped_total: the capture thread's running count of dropped frames; insects: how many
        insects the frame showed (one per track), for the interval's `max_insects`.
        """
        now = _to_us(ts)
        prev, self._last_frame_us = self._last_frame_us, now
        if prev is not None and not self._paused and 0 < now - prev <= self._max_gap_us:
            self._add_effort(prev, now)
        self._paused = False
        slot = self._slot(self._start_of(now))
        slot.frames += 1
        if insects is not None:
            slot.max_insects = max(slot.max_insects or 0, int(insects))
        slot.last_frame_us = now if slot.last_frame_us is None else max(slot.last_frame_us, now)
        slot.changed = True
        if dropped_total < self._dropped_seen:  # the counter was reset (capture restarted)
            self._dropped_seen = 0
        slot.dropped += dropped_total - self._dropped_seen
        self._dropped_seen = dropped_total
        self._see(now)
        return self._close(lambda end: end + self._delay_us <= now)

    def on_track_finished(self, track: TrackRow) -> None:
        """Count a finished track in the interval of its last_utc (only status 'ended' counts).

        A track that finishes again (re-identified, then lost again) moves to its new interval
        while the old one is still open, and is never counted twice.
        """
        if track.status != "ended":
            return
        tid = int(track.track_id)
        if tid in self._counted:
            return
        old = self._where.pop(tid, None)
        if old is not None and old in self._open:
            self._open[old].tracks.pop(tid, None)
            self._open[old].changed = True
        last = _to_us(track.last_utc)
        start = self._slot_start_for(last)
        slot = self._slot(start)
        slot.tracks[tid] = track
        slot.changed = True
        self._where[tid] = start
        self._see(last)
        self._count_today(tid, self._local_day(last), count_key(track.label))

    def provisional(self) -> list[SummaryRow]:
        """The open intervals that changed since the last call, as rows ending at the latest frame
        (oldest first). The loop stores them after each frame and never publishes them: they are
        what a SIGKILL leaves of the intervals it cut short (see the module docstring)."""
        rows = []
        latest = self._last_frame_us
        for start in sorted(self._open):
            slot = self._open[start]
            if not slot.changed or not (slot.frames or slot.effort_us or slot.tracks):
                continue
            end = start + self._interval_us
            row_end = max(start + 1, min(end, latest if latest is not None else start))
            rows.append(self._row(start, row_end, slot))
            slot.changed, slot.stored = False, True
        return rows

    def pause(self) -> None:
        """The schedule went inactive: the gap until the next frame is not effort."""
        self._paused = True

    def tick(self, now: datetime) -> list[SummaryRow]:
        """While paused (no frames for hours): close the intervals that ended before `now` - delay.

        Without it the night's last intervals would wait for the next evening's first frame. Call
        it with the live clock only; a frame that arrives later for a closed interval is counted
        in the first open one, never in a second row for the same interval.
        """
        now_us = _to_us(now)
        self._see(now_us)
        return self._close(lambda end: end + self._delay_us <= now_us)

    def finish(self, end: datetime) -> list[SummaryRow]:
        """At run end: every open interval, the last one partial (ending at `end`)."""
        end_us = _to_us(end)
        rows = self._close(lambda _end: True, run_end_us=end_us)
        self._last_frame_us = None
        self._paused = False
        return rows

    def today_counts(self) -> dict[str, int]:
        """Finished tracks per deepest label ("unsure" without one) since local midnight.

        "Now" is the latest frame or track time seen, not the wall clock.
        """
        if self._latest_us is None:
            return {}
        return dict(sorted(self._today.get(self._local_day(self._latest_us), {}).items()))

    def seed_today(self, conn: sqlite3.Connection, now: datetime) -> None:
        """After a restart: count today's tracks from earlier runs, so `today` does not drop to 0.

        Not the open tracks a killed run left (resume state saying it never counted them): this run
        continues them and counts each once when it finishes, or counts it then if it never shows
        again (edge/restart.py); counted here as well, the dashboard showed them twice.
        """
        day = now.astimezone(self.zone).date()
        midnight = datetime.combine(day, time(0), tzinfo=self.zone)
        rows = conn.execute(
            "SELECT label, COUNT(*) FROM tracks WHERE status = 'ended' AND run_id != ? "
            "AND (resume_json IS NULL OR json_extract(resume_json, '$.counted')) "
            "AND last_utc >= ? AND last_utc <= ? GROUP BY label",
            (self.run_id, utc_iso(midnight), utc_iso(now)),
        ).fetchall()
        bucket = self._today.setdefault(day, {})
        for label, n in rows:
            key = count_key(label)
            bucket[key] = bucket.get(key, 0) + int(n)
        self._see(_to_us(now))

    # ------------------------------------------------------------ internals

    def _start_of(self, us: int) -> int:
        return (us // self._interval_us) * self._interval_us

    def _slot_start_for(self, us: int) -> int:
        """The interval for data at `us`; the first open one when its own was already emitted."""
        start = self._start_of(us)
        if start < self._closed_until:
            start = min(self._open) if self._open else self._closed_until
        return start

    def _slot(self, start: int) -> _Open:
        if start < self._closed_until:
            start = self._slot_start_for(start)
        slot = self._open.get(start)
        if slot is None:
            slot = self._open[start] = _Open()
        return slot

    def _add_effort(self, a: int, b: int) -> None:
        """Split the watched span [a, b) exactly across interval boundaries."""
        while a < b:
            start = self._start_of(a)
            cut = min(b, start + self._interval_us)
            slot = self._slot(start)
            slot.effort_us += cut - a
            slot.changed = True
            a = cut

    def _see(self, us: int) -> None:
        self._latest_us = us if self._latest_us is None else max(self._latest_us, us)

    def _local_day(self, us: int) -> date:
        return _from_us(us).astimezone(self.zone).date()

    def _count_today(self, tid: int, day: date, label: str) -> None:
        """Today's running totals; a re-finished track moves its count instead of adding one."""
        previous = self._today_of.get(tid)
        if previous is not None:
            bucket = self._today.get(previous[0], {})
            if bucket.get(previous[1], 0) > 0:
                bucket[previous[1]] -= 1
                if bucket[previous[1]] == 0:
                    del bucket[previous[1]]
        bucket = self._today.setdefault(day, {})
        bucket[label] = bucket.get(label, 0) + 1
        self._today_of[tid] = (day, label)
        self._forget_old()

    def _forget_old(self) -> None:
        """Bounded memory over a months-long run: keep yesterday and today only."""
        if self._latest_us is None:
            return
        keep_from = self._local_day(self._latest_us) - timedelta(days=1)
        for day in [d for d in self._today if d < keep_from]:
            del self._today[day]
        for tid in [t for t, (d, _) in self._today_of.items() if d < keep_from]:
            del self._today_of[tid]
        horizon = self._latest_us - 86_400 * _US
        for tid in [t for t, at in self._counted.items() if at < horizon]:
            del self._counted[tid]

    def _close(self, ready: Any, run_end_us: int | None = None) -> list[SummaryRow]:
        rows: list[SummaryRow] = []
        for start in sorted(self._open):
            end = start + self._interval_us
            if not ready(end):
                break
            slot = self._open.pop(start)
            self._closed_until = max(self._closed_until, end)
            for tid in slot.tracks:
                self._counted[tid] = end
                self._where.pop(tid, None)
            if not (slot.frames or slot.effort_us or slot.tracks or slot.stored):
                continue
            row_end = end
            if run_end_us is not None and start <= run_end_us < end:
                last_frame = slot.last_frame_us if slot.last_frame_us is not None else start
                row_end = max(run_end_us, last_frame, start + 1)
            rows.append(self._row(start, row_end, slot))
        return rows

    def _row(self, start: int, end: int, slot: _Open) -> SummaryRow:
        counts = level_counts((counted_lineage(t), t.size_class) for t in slot.tracks.values())
        return SummaryRow(
            run_id=self.run_id,
            start_utc=_from_us(start),
            end_utc=_from_us(end),
            effort_s=slot.effort_us / _US,
            frames_processed=slot.frames,
            frames_dropped=slot.dropped,
            tracks=len(slot.tracks),
            counts=counts,
            max_insects=slot.max_insects,
        )


def store_summary(db: Database, row: SummaryRow) -> None:
    """Queue the row on the writer thread; the same (run_id, start) again replaces it."""
    db.submit(_UPSERT_SUMMARY, row.params())


def summary_from_db(row: Mapping[str, Any]) -> SummaryRow:
    """Read a `summaries` row back (export, reports)."""
    return SummaryRow(
        run_id=int(row["run_id"]),
        start_utc=parse_utc(row["start_utc"]),
        end_utc=parse_utc(row["end_utc"]),
        effort_s=float(row["effort_s"]),
        frames_processed=int(row["frames_processed"]),
        frames_dropped=int(row["frames_dropped"]),
        tracks=int(row["tracks"]),
        counts=json.loads(row["counts_json"]),
        max_insects=row["max_insects"] if "max_insects" in row.keys() else None,  # noqa: SIM118
    )
