"""Storage: the SQLite database (one writer thread, batched, migrated) and the crop images.

Typical use by the pipeline::

    db = Database(config.database_path, crops_root=config.crops_path)   # or Database.from_config(config)
    run_id = db.start_run(RunInfo(...))
    next_track_id, next_detection_id = db.next_ids()
    db.add_detection(DetectionRow(...), crop)      # queued; returns at once
    db.upsert_track(TrackRow(...))
    db.end_run(run_id, "end of stream", frames_processed=n)
    db.close()
"""

from edge.store.crops import CropStore, CropWriteError
from edge.store.db import Database, connect_reader, count_rows, schema_version
from edge.store.schema import (
    LATEST_VERSION,
    MIGRATIONS,
    RUN_COUNTERS,
    TRACK_STATUSES,
    DetectionRow,
    Migration,
    RunInfo,
    TrackRow,
    migrate,
    parse_utc,
    utc_iso,
)

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "RUN_COUNTERS",
    "TRACK_STATUSES",
    "CropStore",
    "CropWriteError",
    "Database",
    "DetectionRow",
    "Migration",
    "RunInfo",
    "TrackRow",
    "connect_reader",
    "count_rows",
    "migrate",
    "parse_utc",
    "schema_version",
    "utc_iso",
]
