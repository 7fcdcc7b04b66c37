"""What the report shows, as plain numbers: per taxon, per night and per local hour of day.

Counts are finished tracks (status 'ended'), never frames, exactly as in the daily export; the
"night" is the export's day (from `export.day_starts_at` local time to the next day's), so a
report and the daily CSV files of the same period always agree. Reading goes through the
export's read-only snapshot: the trap may keep writing while a report is made.

Taxa are shown at one level (default: the finest level any track in the period reached). A
track identified only to a coarser level keeps its coarser name (its row says which level), so
the rows always add up to every finished track; tracks whose vote abstained at every level form
the row "unsure".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from edge.classify.types import UNKNOWN, UNSURE
from edge.config import ExportConfig, SiteConfig
from edge.errors import ReportError
from edge.export.csvsafe import fixed, integer, render_csv
from edge.export.daily import MAX_DAYS, local_iso
from edge.export.data import (
    TrackRecord,
    day_window,
    effort_seconds,
    latest_device_id,
    ordered_levels,
    parse_day,
    read_tracks,
    snapshot,
)
from edge.store.schema import parse_utc

HOURS = 24
TAXA_HEADER = (
    "taxon",
    "level",
    "count",
    "first_seen",
    "last_seen",
    "mean_confidence",
    "nights_seen",
)


@dataclass(frozen=True)
class TaxonSummary:
    """One row of the per-taxon table. level is None for the 'unsure' row."""

    taxon: str
    level: str | None
    count: int
    first_seen: datetime | None
    last_seen: datetime | None
    mean_confidence: float | None
    nights_seen: int


@dataclass(frozen=True)
class NightSummary:
    """One night: finished tracks per taxon (row names of the table) and hours really watched."""

    night: date
    effort_hours: float
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class ReportData:
    """Everything the plots, the HTML page and taxa.csv are drawn from."""

    device_id: str
    timezone: str
    day_starts_at: str
    level: str | None  # the level taxa are shown at; None when no track has a label
    levels: list[str]  # every level in the period, coarse to fine
    first_night: date | None  # None: nothing in the database and no dates given
    last_night: date | None
    taxa: list[TaxonSummary]  # by count (descending), then name; 'unsure' last
    nights: list[NightSummary]  # every night of the period, in order, also empty ones
    hourly: dict[str, list[int]]  # taxon -> tracks per local hour 0..23 (by first sighting)

    @property
    def hour_order(self) -> list[int]:
        """Clock hours in the order a night is lived: from the export day's start hour round to it.

        With day_starts_at 12:00 a night's activity reads 12, 13, ..., 23, 0, ..., 11, so a
        moth flight from 22:00 to 02:00 is one block, not split across the plot's two ends.
        """
        first = int(self.day_starts_at.split(":")[0]) % HOURS
        return [(first + k) % HOURS for k in range(HOURS)]

    @property
    def total_tracks(self) -> int:
        return sum(t.count for t in self.taxa)

    @property
    def effort_hours(self) -> float:
        return sum(n.effort_hours for n in self.nights)

    @property
    def empty(self) -> bool:
        return self.total_tracks == 0

    def period_text(self) -> str:
        """'2026-07-01 to 2026-07-02' in night names, or 'no data'."""
        if self.first_night is None or self.last_night is None:
            return "no data"
        if self.first_night == self.last_night:
            return f"night of {self.first_night.isoformat()}"
        return f"nights of {self.first_night.isoformat()} to {self.last_night.isoformat()}"


# ---------------------------------------------------------------- pure aggregation


def night_of(moment: datetime, tz: str, day_starts_at: str) -> date:
    """The export day ('night') a UTC moment belongs to, by the export's own day windows."""
    candidate = moment.astimezone(ZoneInfo(tz)).date()
    while day_window(candidate, tz, day_starts_at)[0] > moment:
        candidate -= timedelta(days=1)
    while day_window(candidate, tz, day_starts_at)[1] <= moment:
        candidate += timedelta(days=1)
    return candidate


def default_level(tracks: Sequence[TrackRecord]) -> str | None:
    """The finest level any track has a label at (None when all are unsure)."""
    levels = ordered_levels(tracks)
    return levels[-1] if levels else None


def taxon_at(track: TrackRecord, level: str, levels: Sequence[str]) -> tuple[str, str | None]:
    """(name, level) of a track's row at `level`: its name there, else its finest coarser one.

    A track whose lineage holds only finer levels (a one-level model) keeps its coarsest name.
    """
    if track.unknown:
        return UNKNOWN, None
    if track.unsure:
        return UNSURE, None
    if level in track.lineage:
        return track.lineage[level], level
    limit = levels.index(level) if level in levels else len(levels)
    coarser = [lv for lv in levels[:limit] if lv in track.lineage]
    if coarser:
        return track.lineage[coarser[-1]], coarser[-1]
    own = [lv for lv in levels if lv in track.lineage] or sorted(track.lineage)
    return track.lineage[own[0]], own[0]


def aggregate(
    tracks: Sequence[TrackRecord],
    nights: Sequence[tuple[date, float]],
    *,
    tz: str,
    day_starts_at: str,
    level: str | None = None,
    device_id: str = "trap",
) -> ReportData:
    """Aggregate finished tracks and per-night effort (seconds) into the report's numbers.

    `nights` is the period, in order, with each night's effort; tracks outside it are ignored.
    """
    zone = ZoneInfo(tz)
    period = [n for n, _ in nights]
    in_period = set(period)
    tracks = [t for t in tracks if night_of(t.first, tz, day_starts_at) in in_period]
    levels = ordered_levels(tracks)
    if level is not None and tracks and level not in levels:
        have = ", ".join(levels) if levels else "none (every track is unsure)"
        raise ReportError(f"--level {level!r}: no track in this period has it; levels here: {have}")
    show = level if level is not None else default_level(tracks)

    groups: dict[str, list[TrackRecord]] = {}
    row_level: dict[str, str | None] = {}
    night_counts: dict[date, dict[str, int]] = {n: {} for n in period}
    hourly: dict[str, list[int]] = {}
    for t in tracks:
        name, lv = taxon_at(t, show, levels) if show is not None else (UNSURE, None)
        groups.setdefault(name, []).append(t)
        row_level.setdefault(name, lv)
        night = night_counts[night_of(t.first, tz, day_starts_at)]
        night[name] = night.get(name, 0) + 1
        hourly.setdefault(name, [0] * HOURS)[t.first.astimezone(zone).hour] += 1

    taxa: list[TaxonSummary] = []
    for name, group in groups.items():
        scores = [t.score for t in group if t.score is not None]
        taxa.append(
            TaxonSummary(
                taxon=name,
                level=row_level[name],
                count=len(group),
                first_seen=min(t.first for t in group),
                last_seen=max(t.last for t in group),
                mean_confidence=sum(scores) / len(scores) if scores else None,
                nights_seen=len({night_of(t.first, tz, day_starts_at) for t in group}),
            )
        )
    taxa.sort(key=lambda s: (s.level is None, -s.count, s.taxon))
    return ReportData(
        device_id=device_id,
        timezone=tz,
        day_starts_at=day_starts_at,
        level=show,
        levels=levels,
        first_night=period[0] if period else None,
        last_night=period[-1] if period else None,
        taxa=taxa,
        nights=[NightSummary(n, effort / 3600.0, night_counts[n]) for n, effort in nights],
        hourly=hourly,
    )


def top_taxa(data: ReportData, n: int) -> list[str]:
    """The n most counted identified taxa (ties by name); the plots lump the rest into 'other'."""
    named = [t for t in data.taxa if t.level is not None]
    return [t.taxon for t in named[: max(0, n)]]


def taxa_csv(data: ReportData) -> bytes:
    """taxa.csv: the per-taxon table, spreadsheet-safe, local times with offset."""
    zone = ZoneInfo(data.timezone)
    rows = [
        [
            t.taxon,
            t.level if t.level is not None else t.taxon,  # `unknown` or `unsure`: their own rows
            integer(t.count),
            local_iso(t.first_seen, zone) if t.first_seen else None,
            local_iso(t.last_seen, zone) if t.last_seen else None,
            fixed(t.mean_confidence, 4),
            integer(t.nights_seen),
        ]
        for t in data.taxa
    ]
    return render_csv(TAXA_HEADER, rows)


# ---------------------------------------------------------------- reading the database


def _night_range(since: date | None, until: date | None, bounds: tuple[date, date] | None) -> list[date]:
    first = since if since is not None else (bounds[0] if bounds else until)
    last = until if until is not None else (bounds[1] if bounds else since)
    if first is None or last is None:
        return []
    if first > last:
        if since is not None and until is not None:
            raise ReportError(f"--since {first} is after --until {last}")
        return []  # one end given, the data lies entirely on the other side: an empty period
    n = (last - first).days + 1
    if n > MAX_DAYS:
        raise ReportError(f"{first} to {last}: {n} nights; at most {MAX_DAYS} in one report")
    return [first + timedelta(days=i) for i in range(n)]


def load_report(
    db_path: Path,
    site: SiteConfig,
    export: ExportConfig,
    *,
    since: str | None = None,
    until: str | None = None,
    level: str | None = None,
    device_id: str | None = None,
) -> ReportData:
    """Read the period (nights, inclusive, YYYY-MM-DD; default: every night with data) and aggregate it."""
    first = parse_day(since, "--since") if since is not None else None
    last = parse_day(until, "--until") if until is not None else None
    if first is not None and last is not None and first > last:
        raise ReportError(f"--since {first} is after --until {last}")
    tz, starts = site.timezone, export.day_starts_at
    with snapshot(Path(db_path)) as conn:
        device = device_id or latest_device_id(conn) or "trap"
        t_lo, t_hi = conn.execute(
            "SELECT MIN(first_utc), MAX(first_utc) FROM tracks WHERE status = 'ended'"
        ).fetchone()
        s_lo, s_hi = conn.execute("SELECT MIN(start_utc), MAX(end_utc) FROM summaries").fetchone()
        moments = [parse_utc(x) for x in (t_lo, t_hi) if x is not None]
        moments += [parse_utc(s_lo)] if s_lo is not None else []
        moments += [parse_utc(s_hi) - timedelta(microseconds=1)] if s_hi is not None else []
        bounds = None
        if moments:
            bounds = (night_of(min(moments), tz, starts), night_of(max(moments), tz, starts))
        period = _night_range(first, last, bounds)
        nights: list[tuple[date, float]] = []
        for night in period:
            start, end = day_window(night, tz, starts)
            nights.append((night, effort_seconds(conn, start, end)))
        tracks: list[TrackRecord] = []
        if period:
            window = (day_window(period[0], tz, starts)[0], day_window(period[-1], tz, starts)[1])
            tracks = read_tracks(conn, [window])
    return aggregate(tracks, nights, tz=tz, day_starts_at=starts, level=level, device_id=device)
