"""Helpers shared by the end-to-end tests (imported as `helpers`; pytest puts tests/ on the path)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from edge.config import TrapConfig, parse_config
from edge.intervals import SummaryRow, store_summary
from edge.store.db import Database
from edge.store.schema import RunInfo, TrackRow

# A track as the export and report tests write it: (run, first_utc, status, level, lineage, score)
TrackSpec = tuple[int, str, str, "str | None", "Mapping[str, str] | None", "float | None"]
# A summary: (run, start_utc, end_utc, effort_s)
SummarySpec = tuple[int, str, str, float]


ROOT = Path(__file__).resolve().parents[1]


def trapcam(
    *args: str, timeout: float = 300, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m edge ARGS` from the checkout, output captured: the command as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


def synthetic_config(data_dir: Path, extra: str = "", **source: object) -> TrapConfig:
    """A config for a synthetic sheet night written into `data_dir`; `source` overrides its keys."""
    fields = {"kind": "synthetic", "scene": "sheet", "width": 1280, "height": 720, "frames": 120} | source
    inline = ", ".join(f"{k}: {v}" for k, v in fields.items())
    return parse_config(f"data_dir: {data_dir}\nsource: {{{inline}}}\n{extra}", "test-config")


def query(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read rows from a trapcam database through a separate read-only connection."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def utc(text: str) -> datetime:
    """An ISO time without zone, read as UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def fill_db(
    db: Database,
    info: RunInfo,
    tracks: Mapping[int, TrackSpec],
    summaries: Sequence[SummarySpec],
    *,
    runs: int = 2,
    seconds: float = 30.0,
    hits: int = 6,
    extra: Mapping[int, Mapping[str, Any]] | None = None,
) -> None:
    """The database the export and report tests read: `runs` finished runs, one track row per spec
    (its label the lineage's name at its level; lasting `seconds`; `extra[track_id]` adds fields such
    as best_detection_id or size) and one summary row per spec; queued (the caller flushes)."""
    for _ in range(runs):
        db.end_run(db.start_run(info), "completed")
    for tid, (run, first, status, level, lineage, score) in tracks.items():
        t0 = utc(first)
        fields: dict[str, Any] = {
            "track_id": tid,
            "run_id": run,
            "status": status,
            "first_utc": t0,
            "last_utc": t0 + timedelta(seconds=seconds),
            "hits": hits,
            "x0": 0,
            "y0": 0,
            "x1": 20,
            "y1": 20,
            "level": level,
            "label": None if lineage is None or level is None else lineage[level],
            "score": score,
            "lineage_json": None if lineage is None else dict(lineage),
        }
        fields.update((extra or {}).get(tid, {}))  # e.g. best_detection_id, size, or label "unknown"
        db.upsert_track(TrackRow(**fields))
    for run, start, end, effort in summaries:
        store_summary(db, SummaryRow(run, utc(start), utc(end), effort, 100, 0, 1, {}))
