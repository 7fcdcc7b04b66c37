"""Daily CSV files: counts per taxon with effort, and the tracks themselves.

A "day" D runs from D at `export.day_starts_at` local time (site.timezone) to D+1 at the same
time. With the default 12:00 one night is one file, named by the evening's date. A track belongs
to the day its `first_utc` falls in; only finished tracks (status 'ended') are exported.

`<out>/<D>/counts_<device>_<D>.csv`, one row per (level, taxon):

    date, device_id, level, taxon, count, first_seen, last_seen, mean_confidence, effort_hours

- level/taxon: every level of the tracks' lineages, coarse to fine, taxa by name; a track counts
  once at each level of its lineage (a species-level track also counts for its family and
  order). Then `unknown,unknown` where the open set found tracks unlike every taxon of the model
  (DESIGN.md; only then), `unsure,unsure` (tracks whose vote abstained at every level) and
  `all,all` (every finished track). These two rows are always present, so a night with effort
  and no insect still says "0 insects in 7.5 hours".
- first_seen / last_seen: the earliest first sighting and the latest last sighting of those
  tracks, local time with UTC offset, to the second (ISO 8601, e.g. 2026-07-01T23:14:05+02:00):
  readable by a person, and exact as an instant.
- mean_confidence: the mean of those tracks' own scores (the vote's confidence at each track's
  deepest level), 4 decimals; empty when none has a score.
- effort_hours: hours the trap really watched during the whole day (from the interval
  summaries; a summary crossing the day boundary counts in proportion), 3 decimals; the same on
  every row of the file.
- max_per_snapshot: time-lapse traps (tracker.mode timelapse): the most of that taxon seen in one
  snapshot that day (for `all,all` the most insects at once), by each crop's own answer; `count`
  is the individuals linked across snapshots. Empty for a filmed night (no snapshot rows).

`<out>/<D>/snapshots_<device>_<D>.csv`, time-lapse traps only, one row per snapshot and taxon:

    time, run_id, level, taxon, count

every level and taxon the snapshot's crops were given (coarse to fine), `unsure,unsure` for crops
no head answered, `size_class,<class>`, and always `all,all` (0 for an empty snapshot, so the file
says when the sheet was watched and empty).

`<out>/<D>/tracks_<device>_<D>.csv`, one row per finished track, by first sighting:

    track_id, run_id, first_seen, last_seen, duration_s, hits, level, label, score,
    length_px, length_mm, size_class, <one column per lineage level, coarse to fine>, best_crop

length_px is the long side of the box of the track's best detection (full-resolution pixels),
length_mm the same where the camera's scale is configured (`size.mm_per_px`), size_class its class
(`size.classes`). best_crop is the path of the track's best crop still on disk, relative to the
crops folder.

Files are written atomically and are byte-identical when re-run on the same data (no export
time inside, stable order, fixed decimals, '\\n' line ends); text cells are escaped against
spreadsheet formulas (see csvsafe).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from edge.classify.taxonomy import RANKS
from edge.classify.types import UNKNOWN, UNSURE
from edge.config import ExportConfig, SiteConfig
from edge.errors import ExportError
from edge.export.csvsafe import Num, atomic_write, fixed, integer, render_csv
from edge.export.data import (
    SnapshotRecord,
    TrackRecord,
    current_runs,
    day_of,
    day_window,
    effort_seconds,
    last_ended_day,
    latest_device_id,
    ordered_levels,
    parse_day,
    read_snapshots,
    read_tracks,
    snapshot,
)
from edge.intervals import SIZE_CLASS
from edge.store.schema import parse_utc

ALL = "all"
MAX_DAYS = 3660
COUNTS_HEADER = (
    "date",
    "device_id",
    "level",
    "taxon",
    "count",
    "first_seen",
    "last_seen",
    "mean_confidence",
    "effort_hours",
    "max_per_snapshot",
)
SNAPSHOTS_HEADER = ("time", "run_id", "level", "taxon", "count")
TRACKS_HEADER = (
    "track_id",
    "run_id",
    "first_seen",
    "last_seen",
    "duration_s",
    "hits",
    "level",
    "label",
    "score",
    "length_px",
    "length_mm",
    "size_class",
)


def resolve_days(
    day: str | None = None,
    since: str | None = None,
    until: str | None = None,
    *,
    tz: str = "UTC",
    day_starts_at: str = "12:00",
    now: datetime | None = None,
) -> list[date]:
    """`--date D`, `--since D1 [--until D2]` (inclusive), or by default the last day that has ended."""
    if day is not None and (since is not None or until is not None):
        raise ExportError("--date cannot be combined with --since/--until")
    if until is not None and since is None:
        raise ExportError("--until needs --since")
    if day is not None:
        return [parse_day(day, "--date")]
    last = last_ended_day(tz, day_starts_at, now)
    if since is None:
        return [last]
    first = parse_day(since, "--since")
    end = parse_day(until, "--until") if until is not None else last
    if first > end:
        what = f"--until {end}" if until is not None else f"the last day that has ended ({end})"
        raise ExportError(f"--since {first} is after {what}")
    n = (end - first).days + 1
    if n > MAX_DAYS:
        raise ExportError(f"--since {first} --until {end}: {n} days; at most {MAX_DAYS} at once")
    return [first + timedelta(days=i) for i in range(n)]


def watched_days(db_path: Path, tz: str, day_starts_at: str) -> list[date]:
    """The export days on which the trap watched (a summary with effort or a processed frame), oldest
    first. Frames count without effort too: snapshots hours apart are no watched time, yet the trap
    looked and counted.

    A summary interval that crosses a day boundary makes both days watched; superseded runs are left
    out, as everywhere in the exports.
    """
    with snapshot(db_path) as conn:
        rows = conn.execute(
            "SELECT start_utc, end_utc FROM summaries WHERE (effort_s > 0 OR frames_processed > 0) "
            f"{current_runs(conn)}"
        ).fetchall()
    days: set[date] = set()
    for start, end in rows:
        first, last = parse_utc(str(start)), parse_utc(str(end)) - timedelta(microseconds=1)
        days.add(day_of(first, tz, day_starts_at))
        days.add(day_of(max(first, last), tz, day_starts_at))
    return sorted(days)


def describe_days(days: Sequence[date]) -> str:
    """'2026-06-30 .. 2026-07-03 (4 days)', '2026-07-01', or 'none' for a message."""
    if not days:
        return "none"
    if len(days) == 1:
        return days[0].isoformat()
    return f"{days[0]} .. {days[-1]} ({len(days)} days)"


@dataclass(frozen=True)
class DayChoice:
    """The days an export writes and the line that says why those (for the first line on screen)."""

    days: list[date]
    note: str | None = None


def choose_days(
    db_path: Path,
    out_dir: Path,
    device_id: str,
    *,
    day: str | None = None,
    since: str | None = None,
    until: str | None = None,
    pending: bool = False,
    tz: str = "UTC",
    day_starts_at: str = "12:00",
    now: datetime | None = None,
) -> DayChoice:
    """Which days `trapcam export` writes, decided by what the trap watched.

    - `--date D`: D, or an ExportError naming the days with data when the trap did not watch on D
      (an empty file would read as "no insects", which is absence data only with effort);
    - `--since [--until]`: the watched days in that range (the others are named in the note);
    - `--pending` (the daily timer): every finished, watched day whose counts file is not in
      `out_dir` yet, so a day missed while the trap was off is caught up;
    - nothing: the last finished day the trap watched (not simply yesterday: after a break it is
      the last night with data, and it is named).
    A day with effort and no insect is a valid export (zero counts and the effort).
    """
    last = last_ended_day(tz, day_starts_at, now)
    every_day = watched_days(db_path, tz, day_starts_at)
    watched = [d for d in every_day if d <= last]
    have = f"days with data: {describe_days(watched)}"
    if pending:
        if day is not None or since is not None or until is not None:
            raise ExportError("--pending chooses the days itself: leave out --date, --since and --until")
        todo = [d for d in watched if not counts_path(out_dir, device_id, d).is_file()][-MAX_DAYS:]
        if not todo:
            return DayChoice([], f"nothing to export: every finished day with data is in {out_dir} ({have})")
        return DayChoice(
            todo, f"exporting {describe_days(todo)}: finished days with data not yet in {out_dir}"
        )
    if day is None and since is None:
        if until is not None:
            raise ExportError("--until needs --since")
        if not watched:
            raise ExportError(
                f"{db_path}: the trap has not watched a finished day yet (no frame before today)"
            )
        return DayChoice(
            [watched[-1]],
            f"exporting {watched[-1]}, the last finished day the trap watched (--date for another)",
        )
    days = resolve_days(day, since, until, tz=tz, day_starts_at=day_starts_at, now=now)
    seen = set(every_day)
    kept = [d for d in days if d in seen]
    if not kept:
        what = f"on {days[0]}" if len(days) == 1 else f"from {days[0]} to {days[-1]}"
        raise ExportError(f"the trap did not watch {what} (no frame or effort in the database); {have}")
    skipped = [d for d in days if d not in seen]
    note = f"not exported, the trap did not watch: {', '.join(map(str, skipped))}" if skipped else None
    return DayChoice(kept, note)


def counts_path(out_dir: Path, device_id: str, day: date) -> Path:
    """Where a day's counts file is written (also how `--pending` knows a day is exported)."""
    return Path(out_dir) / day.isoformat() / f"counts_{device_id}_{day.isoformat()}.csv"


def local_iso(moment: datetime, zone: ZoneInfo) -> str:
    """Local time with UTC offset, to the second (microseconds truncated)."""
    return moment.astimezone(zone).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class _Taxon:
    count: int
    first: datetime | None
    last: datetime | None
    mean_score: float | None


def _summarise(tracks: Sequence[TrackRecord]) -> _Taxon:
    scores = [t.score for t in tracks if t.score is not None]
    return _Taxon(
        count=len(tracks),
        first=min((t.first for t in tracks), default=None),
        last=max((t.last for t in tracks), default=None),
        mean_score=sum(scores) / len(scores) if scores else None,
    )


def counts_csv(
    day: date,
    device_id: str,
    tracks: Sequence[TrackRecord],
    effort_s: float,
    zone: ZoneInfo,
    snapshots: Sequence[SnapshotRecord] = (),
) -> bytes:
    """The counts file's bytes (see the module docstring for the columns)."""
    rows: list[list[object]] = []
    effort_h = fixed(effort_s / 3600.0, 3)

    def most(level: str, taxon: str) -> object:
        if not snapshots:
            return None
        if level == ALL:
            return integer(max(s.insects for s in snapshots))
        return integer(max(s.counts.get(level, {}).get(taxon, 0) for s in snapshots))

    def row(level: str, taxon: str, group: Sequence[TrackRecord]) -> list[object]:
        s = _summarise(group)
        return [
            Num(day.isoformat()),
            device_id,
            level,
            taxon,
            integer(s.count),
            local_iso(s.first, zone) if s.first else None,
            local_iso(s.last, zone) if s.last else None,
            fixed(s.mean_score, 4),
            effort_h,
            most(level, taxon),
        ]

    for level in ordered_levels(tracks):
        by_taxon: dict[str, list[TrackRecord]] = {}
        for t in tracks:
            if level in t.lineage:
                by_taxon.setdefault(t.lineage[level], []).append(t)
        for taxon in sorted(by_taxon):
            rows.append(row(level, taxon, by_taxon[taxon]))
    unknown = [t for t in tracks if t.unknown]
    if unknown:  # only a model with open-set statistics answers it (older bundles never do)
        rows.append(row(UNKNOWN, UNKNOWN, unknown))
    rows.append(row(UNSURE, UNSURE, [t for t in tracks if t.unsure]))
    rows.append(row(ALL, ALL, list(tracks)))
    return render_csv(COUNTS_HEADER, rows)


def snapshots_csv(snapshots: Sequence[SnapshotRecord], zone: ZoneInfo) -> bytes:
    """The snapshots file's bytes: per snapshot, its counts by level and taxon, then `all,all`."""
    rows: list[list[object]] = []
    for snap in snapshots:
        when = local_iso(snap.ts, zone)
        levels = [lv for lv in snap.counts if lv not in (UNKNOWN, UNSURE, SIZE_CLASS)]
        for level in [*sorted(levels, key=_rank), UNKNOWN, UNSURE, SIZE_CLASS]:
            for taxon, n in sorted(snap.counts.get(level, {}).items()):
                rows.append([when, integer(snap.run_id), level, taxon, integer(n)])
        rows.append([when, integer(snap.run_id), ALL, ALL, integer(snap.insects)])
    return render_csv(SNAPSHOTS_HEADER, rows)


def _rank(level: str) -> tuple[int, str]:
    """Coarse levels first (order before family before species), unknown levels after, by name."""
    return (RANKS.index(level), level) if level in RANKS else (len(RANKS), level)


def tracks_csv(tracks: Sequence[TrackRecord], zone: ZoneInfo) -> bytes:
    """The tracks file's bytes: fixed columns, one per lineage level, then the best crop."""
    levels = ordered_levels(tracks)
    level_cols = [f"taxon_{lv}" if lv in TRACKS_HEADER or lv == "best_crop" else lv for lv in levels]
    header = [*TRACKS_HEADER, *level_cols, "best_crop"]
    rows = []
    for t in tracks:
        rows.append(
            [
                integer(t.track_id),
                integer(t.run_id),
                local_iso(t.first, zone),
                local_iso(t.last, zone),
                fixed((t.last - t.first).total_seconds(), 3),
                integer(t.hits),
                t.level if not t.unsure else None,
                t.label if not t.unsure else None,
                fixed(t.score, 4) if not (t.unsure or t.unknown) else None,
                fixed(t.length_px, 0) if t.length_px is not None else None,
                fixed(t.length_mm, 2) if t.length_mm is not None else None,
                t.size_class,
                *[t.lineage.get(lv) for lv in levels],
                t.crop_path,
            ]
        )
    return render_csv(header, rows)


def export_days(
    db_path: Path,
    out_dir: Path,
    days: Sequence[date],
    site: SiteConfig,
    export: ExportConfig,
    *,
    device_id: str | None = None,
) -> list[Path]:
    """Write the counts and tracks files of each day; returns their paths (counts, tracks per day).

    device_id names the files; by default the device of the database's latest run.
    """
    zone = ZoneInfo(site.timezone)
    out_dir = Path(out_dir)
    written: list[Path] = []
    with snapshot(Path(db_path)) as conn:
        device = device_id or latest_device_id(conn) or "trap"
        for day in days:
            start, end = day_window(day, site.timezone, export.day_starts_at)
            tracks = read_tracks(conn, [(start, end)])
            effort = effort_seconds(conn, start, end)
            snapshots = read_snapshots(conn, start, end)
            folder = out_dir / day.isoformat()
            counts_file = counts_path(out_dir, device, day)
            tracks_path = folder / f"tracks_{device}_{day.isoformat()}.csv"
            day_files = [counts_file, tracks_path]
            atomic_write(tracks_path, tracks_csv(tracks, zone))
            if snapshots:
                snapshots_path = folder / f"snapshots_{device}_{day.isoformat()}.csv"
                atomic_write(snapshots_path, snapshots_csv(snapshots, zone))
                day_files.append(snapshots_path)
            # last: a day whose counts file exists is complete (`--pending` skips it)
            atomic_write(counts_file, counts_csv(day, device, tracks, effort, zone, snapshots))
            written += day_files
    return written
