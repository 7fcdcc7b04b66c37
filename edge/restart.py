"""What a new run takes over from the runs before it, so that one insect is one count.

A trap restarts for many reasons (a crash, a SIGKILL by the watchdog, a power cut, an update),
and a replay is run again by hand. Before this module each restart counted again: the insects
sitting through it got a second track, and a replay of frames already processed counted them a
second time (a night replayed twice: 28 tracks for 14 insects).

- `carried_tracks`: the tracks the previous run of the same source left open (or closed only
  because it stopped), with the tracker's memory of them (`tracks.resume_json`), for
  `Tracker.carry_over`.
- `processed_before`: how far earlier runs of a replay source got, so the replay resumes after
  the last frame stored and says so, instead of counting those frames again.
- `supersede`: `--from-start` re-processes a replay into a new run; the older runs of that source
  are marked (`runs.superseded_by`), their counted tracks become 'discarded' with reason
  'superseded', and the exports leave their summaries and snapshots out. No row is deleted.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from edge.detect.base import Box
from edge.errors import TrapcamError
from edge.store.db import Database
from edge.store.schema import CURRENT_RUNS, parse_utc
from edge.track.resume import ResumeState
from edge.track.tracker import TrackState

log = logging.getLogger("trapcam.restart")


@dataclass(frozen=True)
class Processed:
    """How far earlier runs got through a replay source: its frames up to `last_utc` are stored."""

    run_id: int  # the run that stored the latest frame
    runs: int  # how many earlier (not superseded) runs processed frames of it
    last_utc: datetime


def _other_current_runs(conn: sqlite3.Connection, source: str, run_id: int) -> list[int]:
    """The not superseded runs of `source` other than `run_id`, oldest first."""
    return [
        int(r[0])
        for r in conn.execute(
            f"SELECT run_id FROM runs WHERE source = ? AND run_id != ? AND run_id IN ({CURRENT_RUNS}) "
            "ORDER BY run_id",
            (source, run_id),
        )
    ]


def processed_before(db: Database, run_id: int, source: str) -> Processed | None:
    """How far runs of `source` before `run_id` got (None: no frame of it is stored yet).

    Every processed frame ends a summary row (provisional rows are written after each frame, after
    that frame's detections), so the latest `end_utc` is the last frame whose rows are committed.
    """

    def read(conn: sqlite3.Connection) -> Processed | None:
        runs = _other_current_runs(conn, source, run_id)
        if not runs:
            return None
        marks = ", ".join("?" * len(runs))
        latest, last = conn.execute(
            f"SELECT run_id, MAX(end_utc) FROM summaries WHERE run_id IN ({marks})", runs
        ).fetchone()
        if last is None:
            return None
        with_frames = conn.execute(
            f"SELECT COUNT(DISTINCT run_id) FROM summaries WHERE run_id IN ({marks})", runs
        ).fetchone()[0]
        return Processed(run_id=int(latest), runs=int(with_frames), last_utc=parse_utc(str(last)))

    return db.run_sync(read)


def supersede(db: Database, run_id: int, source: str) -> list[int]:
    """Mark every earlier current run of `source` as re-processed by `run_id`; returns their ids."""

    def mark(conn: sqlite3.Connection) -> list[int]:
        older = _other_current_runs(conn, source, run_id)
        if not older:
            return []
        marks = ", ".join("?" * len(older))
        conn.execute(f"UPDATE runs SET superseded_by = ? WHERE run_id IN ({marks})", (run_id, *older))
        conn.execute(
            "UPDATE tracks SET status = 'discarded', discard_reason = 'superseded', resume_json = NULL "
            f"WHERE run_id IN ({marks}) AND status IN ('ended', 'confirmed')",
            older,
        )
        return older

    return db.run_sync(mark)


_TRACK_FIELDS = (
    "track_id, status, first_utc, last_utc, hits, level, label, score, votes_json, best_detection_id, "
    "x0, y0, x1, y1, moved_px, edge_hits, resume_json"
)


def carried_tracks(db: Database, run_id: int, source: str) -> list[tuple[TrackState, ResumeState]]:
    """The counted tracks earlier runs of `source` left open or closed only by stopping.

    Read after `Database.start_run`, which has ended a killed run's open tracks: they are 'ended'
    rows that still carry resume state. A carried track keeps it until a later run's tracker ends
    it for good (`forget`), so an insect away during one short run and back in the next is still
    re-identified. A track whose state cannot be read is left as it is (with a warning): it stays
    one count, the insect may get a second track, the trap goes on.
    """

    def read(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
        return conn.execute(
            f"SELECT {_TRACK_FIELDS} FROM tracks WHERE status = 'ended' AND resume_json IS NOT NULL "
            "AND run_id IN (SELECT run_id FROM runs WHERE source = ? AND run_id < ? "
            f"AND run_id IN ({CURRENT_RUNS})) ORDER BY track_id",
            (source, run_id),
        ).fetchall()

    out: list[tuple[TrackState, ResumeState]] = []
    for row in db.run_sync(read):
        (track_id, _status, first, last, hits, level, label, score, votes, best_id, *box) = row[:14]
        moved, edge_hits, resume_text = row[14:]
        try:
            resume = ResumeState.from_json(str(resume_text))
            state = TrackState(
                track_id=int(track_id),
                status="confirmed",
                first_seen=parse_utc(str(first)),
                last_seen=parse_utc(str(last)),
                hits=int(hits),
                misses=0,
                box=Box(*(int(v) for v in box)),
                best_detection_id=int(best_id or 0),
                level=level if isinstance(level, str) else None,
                label=label if isinstance(label, str) else None,
                score=float(score or 0.0),
                votes=json.loads(str(votes)) if votes else {},
                moved_px=float(moved or 0.0),
                edge_hits=int(edge_hits or 0),
            )
        except (TrapcamError, ValueError, TypeError) as exc:
            log.warning(
                "track %s: its saved state cannot be continued (%s); a new track starts", track_id, exc
            )
            continue
        out.append((state, resume))
    return out


def forget(db: Database, track_id: int) -> None:
    """A carried track this run's tracker ended without seeing it again: no later run continues it."""
    db.submit("UPDATE tracks SET resume_json = NULL WHERE track_id = ?", (track_id,))


def describe(processed: Processed, source: str) -> str:
    """The one line a resumed replay says at start."""
    runs = (
        f"run {processed.run_id}"
        if processed.runs == 1
        else f"{processed.runs} runs (latest: {processed.run_id})"
    )
    return (
        f"{source}: frames up to {processed.last_utc:%Y-%m-%d %H:%M:%S} UTC were processed by {runs}; "
        "resuming after them, so nothing is counted twice (--from-start re-processes them into a new run "
        "that supersedes the old counts)"
    )
