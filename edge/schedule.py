"""When the trap watches: active windows between clock times or sun events, resolved per day.

Why resolve per day and not once: sunset moves by minutes a day and the clock jumps on DST days,
so every window is resolved for the local date it starts on (in `site.timezone`), with astral's
sun positions for `site.latitude/longitude/elevation_m`, and handled in UTC from then on.

Rules, so that a season of nights is predictable:

- An edge is a local clock time "HH:MM" or a sun event (sunrise, sunset, dawn, dusk, noon; dawn
  and dusk are civil twilight, as in astral) with an optional offset such as "+30m" or "-1.5h"
  (at most 12 h either way).
- A window belongs to the local day it starts on; its end is the first occurrence of the end edge
  after the start (so "21:00"-"05:00" and "sunset"-"sunrise" run past midnight into the next
  morning). To know whether 02:00 is inside last evening's window, yesterday's windows are
  resolved too. A clock time that does not exist on a DST day (02:30 in spring) is read with the
  offset before the change; one that exists twice (autumn) is the first of the two.
- Polar day and night (astral raises ValueError: the sun does not cross that edge's horizon that
  day). Every window has a side: "dark" when it starts at sunset/dusk or ends at sunrise/dawn (a
  night window), "light" when it starts at sunrise/dawn or ends at sunset/dusk. When an edge's
  event does not happen and the sun stays on the window's side all day (polar night for a dark
  window, midnight sun for a light one), the missing start becomes the day's local midnight and a
  missing end the following local midnight: the trap watches around the clock. When the sun stays
  on the other side (midnight sun for a night window; white nights for a "dusk" edge at 60°N),
  the window does not happen that day: it is inactive. Each such case is logged once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from edge.errors import ConfigError

log = logging.getLogger(__name__)

_EDGE_RE = re.compile(
    r"^(?:(?P<hh>[01]\d|2[0-3]):(?P<mm>[0-5]\d)"
    r"|(?P<event>sunrise|sunset|dawn|dusk|noon)(?:(?P<sign>[+-])(?P<num>\d+(?:\.\d+)?)(?P<unit>[hm]))?)$"
)
_MAX_OFFSET = timedelta(hours=12)
_MORNING = ("sunrise", "dawn")
_EVENING = ("sunset", "dusk")
# Elevation of the sun's centre (degrees) at each event, in case astral's helpers are unavailable:
# sunrise/sunset include refraction and the sun's radius; dawn/dusk are civil twilight.
_HORIZON = {"sunrise": -0.833, "sunset": -0.833, "dawn": -6.0, "dusk": -6.0}
_SEARCH_DAYS = 400  # next_change looks this far ahead (a polar night lasts months) before giving up

SunState = Literal["up", "down"]


# What a schedule reads of the config (edge.config's WindowConfig, ScheduleConfig, SiteConfig): shapes,
# not the module, because the config itself asks the schedule whether a window crosses midnight.
class WindowShape(Protocol):
    start: str
    end: str


class ScheduleShape(Protocol):
    @property
    def windows(self) -> Sequence[WindowShape]: ...


class SiteShape(Protocol):
    timezone: str
    latitude: float | None
    longitude: float | None
    elevation_m: float | None


@dataclass(frozen=True)
class Edge:
    """One parsed window edge: a clock time, or a sun event plus offset."""

    text: str
    clock: time | None = None
    event: str | None = None
    offset: timedelta = timedelta(0)

    @classmethod
    def parse(cls, text: str, where: str) -> Edge:
        m = _EDGE_RE.match(text.strip()) if isinstance(text, str) else None
        if m is None:
            raise ConfigError(
                f"{where}: got {text!r}; expected 'HH:MM' or sunrise|sunset|dawn|dusk|noon with an optional "
                f"offset such as '+30m' or '-1.5h'"
            )
        if m["hh"] is not None:
            return cls(text, clock=time(int(m["hh"]), int(m["mm"])))
        offset = timedelta(0)
        if m["num"] is not None:
            amount = float(m["num"]) * (3600 if m["unit"] == "h" else 60)
            offset = timedelta(seconds=amount if m["sign"] == "+" else -amount)
            if abs(offset) > _MAX_OFFSET:
                raise ConfigError(f"{where}: got {text!r}; expected an offset of at most 12 h either way")
        return cls(text, event=m["event"], offset=offset)


@dataclass(frozen=True)
class Interval:
    """One resolved active span in UTC, with the edges (for `describe`) that open and close it."""

    start: datetime
    end: datetime
    start_label: str
    end_label: str


@dataclass(frozen=True)
class _Polar:
    """An edge whose sun event does not happen on a day, and where the sun stays instead."""

    state: SunState


class Schedule:
    """Active windows of a trap: `is_active(now)` for the loop, `next_change` and `describe` for logs."""

    def __init__(self, cfg: ScheduleShape, site: SiteShape) -> None:
        self.zone: tzinfo = ZoneInfo(site.timezone) if site.timezone != "UTC" else timezone.utc
        self.windows: list[tuple[Edge, Edge]] = []
        for i, window in enumerate(cfg.windows):
            start = Edge.parse(window.start, f"schedule.windows.{i}.start")
            end = Edge.parse(window.end, f"schedule.windows.{i}.end")
            if start.text.strip() == end.text.strip():
                raise ConfigError(
                    f"schedule.windows.{i}: start and end are both {start.text!r}; "
                    f"expected two different edges"
                )
            self.windows.append((start, end))
        self._observer = None
        if any(e.event is not None for w in self.windows for e in w):
            if site.latitude is None or site.longitude is None:
                raise ConfigError(
                    "schedule.windows: edges relative to the sun need site.latitude and site.longitude"
                )
            from astral import Observer

            self._observer = Observer(site.latitude, site.longitude, site.elevation_m or 0.0)
        self._cache: dict[date, list[Interval]] = {}
        self._noted: set[tuple[int, str, str]] = set()

    # ------------------------------------------------------------ public

    def is_active(self, now: datetime) -> bool:
        """True inside any window (windows of the two previous days may still be running)."""
        if not self.windows:
            return True
        today = self._local_date(now)
        return any(
            iv.start <= now < iv.end for d in range(-2, 1) for iv in self._day(today + timedelta(days=d))
        )

    def windows_for(self, day: date) -> list[tuple[datetime, datetime]]:
        """The windows that start on this local date, as (start, end) in UTC, sorted by start."""
        return [(iv.start, iv.end) for iv in self._day(day)]

    def window_start(self, now: datetime) -> datetime | None:
        """When the window holding `now` opened (UTC: the lamp went on); None without windows or outside."""
        if not self.windows:
            return None
        today = self._local_date(now)
        starts = [
            iv.start
            for d in range(-2, 1)
            for iv in self._day(today + timedelta(days=d))
            if iv.start <= now < iv.end
        ]
        return max(starts) if starts else None

    def next_change(self, now: datetime) -> datetime | None:
        """When is_active next flips (UTC); None without windows or when nothing changes within a year."""
        found = self._next(now)
        return None if found is None else found[0]

    def describe(self, now: datetime) -> str:
        """One line for logs and health, e.g. 'active until 05:12 (sunrise)'."""
        if not self.windows:
            return "always active (no schedule windows)"
        state = "active" if self.is_active(now) else "inactive"
        found = self._next(now)
        if found is None:
            return f"{state} (no change within {_SEARCH_DAYS} days)"
        when, label = found
        local = when.astimezone(self.zone)
        text = (
            local.strftime("%H:%M") if when - now < timedelta(hours=24) else local.strftime("%Y-%m-%d %H:%M")
        )
        return f"{state} until {text} ({label})"

    # ------------------------------------------------------------ resolving

    def _local_date(self, moment: datetime) -> date:
        if moment.tzinfo is None:
            raise ConfigError(
                f"schedule: time {moment.isoformat()} has no time zone; expected an aware datetime"
            )
        return moment.astimezone(self.zone).date()

    def _midnight(self, day: date) -> datetime:
        """Start of a local day in UTC."""
        return datetime.combine(day, time(0), tzinfo=self.zone).astimezone(timezone.utc)

    def _resolve(self, edge: Edge, day: date) -> datetime | _Polar:
        """The edge on a local date in UTC, or where the sun stays when its event does not happen."""
        if edge.clock is not None:
            return datetime.combine(day, edge.clock, tzinfo=self.zone).astimezone(timezone.utc)
        import astral.sun

        assert self._observer is not None and edge.event is not None
        fn: Callable[..., datetime] = getattr(astral.sun, edge.event)
        try:
            moment = fn(self._observer, day, tzinfo=self.zone)
        except ValueError:
            # The highest sun of the day, without refraction, against the horizon astral used.
            noon = astral.sun.noon(self._observer, day, tzinfo=self.zone)
            top = astral.sun.elevation(self._observer, noon, with_refraction=False)
            return _Polar("up" if top > self._horizon(edge.event) else "down")
        return moment.astimezone(timezone.utc) + edge.offset

    def _horizon(self, event: str) -> float:
        """Geometric elevation (degrees) of the sun's centre at an event, as astral's search defines it."""
        import astral.sun

        assert self._observer is not None
        try:
            zenith = 90.0 + (astral.sun.SUN_APPARENT_RADIUS if event in ("sunrise", "sunset") else 6.0)
            height = float(self._observer.elevation) if isinstance(self._observer.elevation, float) else 0.0
            zenith += astral.sun.adjust_to_horizon(height) if height > 0 else 0.0
            return 90.0 - zenith - astral.sun.refraction_at_zenith(zenith)
        except (AttributeError, TypeError):  # astral's helpers moved: close enough for a polar day
            return _HORIZON[event]

    def _day(self, day: date) -> list[Interval]:
        cached = self._cache.get(day)
        if cached is None:
            cached = sorted(
                (iv for i, w in enumerate(self.windows) if (iv := self._window(i, w, day)) is not None),
                key=lambda iv: iv.start,
            )
            if len(self._cache) > 2 * _SEARCH_DAYS:
                self._cache.clear()
            self._cache[day] = cached
        return cached

    def _window(self, index: int, window: tuple[Edge, Edge], day: date) -> Interval | None:
        start_edge, end_edge = window
        side = _side(start_edge, end_edge)
        start = self._resolve(start_edge, day)
        if isinstance(start, _Polar):
            if not self._fits(index, start_edge, start, side, day):
                return None
            # The window would have opened at an event that does not happen; the sun is already on
            # its side: open at midnight, and look for the end after the event's usual time of day.
            begin, nominal, start_label = (
                self._midnight(day),
                self._nominal(start_edge, day),
                _polar_label(start),
            )
        else:
            begin, nominal, start_label = start, start, start_edge.text
        for offset in (0, 1):
            end_day = day + timedelta(days=offset)
            end = self._resolve(end_edge, end_day)
            if isinstance(end, _Polar):
                if offset == 0:
                    continue  # the window may still end at the next day's event
                if not self._fits(index, end_edge, end, side, end_day):
                    return None
                return Interval(
                    begin, self._midnight(end_day + timedelta(days=1)), start_label, _polar_label(end)
                )
            if end > nominal:
                return Interval(begin, end, start_label, end_edge.text) if end > begin else None
        return None

    def _nominal(self, edge: Edge, day: date) -> datetime:
        """Where a missing event would usually fall: 06:00 for morning events, 18:00 for evening ones."""
        hour = 6 if edge.event in _MORNING else 18 if edge.event in _EVENING else 12
        return datetime.combine(day, time(hour), tzinfo=self.zone).astimezone(timezone.utc)

    def _fits(self, index: int, edge: Edge, polar: _Polar, side: str | None, day: date) -> bool:
        """Does the sun stay on the window's side? Logs each window/edge/state once."""
        fits = (side == "dark" and polar.state == "down") or (side == "light" and polar.state == "up")
        key = (index, edge.text, polar.state)
        if key not in self._noted:
            self._noted.add(key)
            where = "above" if polar.state == "up" else "below"
            what = "active around the clock" if fits else "inactive"
            log.info(
                "schedule: window %d: no %s on %s (the sun stays %s its horizon all day): the window is %s "
                "on such days",
                index,
                edge.event,
                day.isoformat(),
                where,
                what,
            )
        return fits

    def _next(self, now: datetime) -> tuple[datetime, str] | None:
        """The next flip of is_active after now, with the label of the edge that causes it."""
        if not self.windows:
            return None
        today = self._local_date(now)
        intervals: list[Interval] = []
        for ahead in range(-2, _SEARCH_DAYS):
            intervals.extend(self._day(today + timedelta(days=ahead)))
            if ahead < 1:
                continue
            # Windows of later days start after the local midnight 12 h (largest offset) before them.
            horizon = self._midnight(today + timedelta(days=ahead)) - timedelta(hours=13)
            found = _flip(_merge(intervals), now)
            if found is not None and found[0] <= horizon:
                return found
        return None


def _side(start: Edge, end: Edge) -> str | None:
    """'dark' for a night window, 'light' for a day window, None when no edge says (clock/noon only)."""
    if start.event in _EVENING:
        return "dark"
    if start.event in _MORNING:
        return "light"
    if end.event in _MORNING:
        return "dark"
    if end.event in _EVENING:
        return "light"
    return None


def _polar_label(polar: _Polar) -> str:
    return "sun stays up" if polar.state == "up" else "sun stays down"


def _merge(intervals: list[Interval]) -> list[Interval]:
    """Union of overlapping or touching intervals (two windows back to back are one active stretch)."""
    merged: list[Interval] = []
    for iv in sorted(intervals, key=lambda iv: iv.start):
        if merged and iv.start <= merged[-1].end:
            last = merged[-1]
            if iv.end > last.end:
                merged[-1] = Interval(last.start, iv.end, last.start_label, iv.end_label)
        else:
            merged.append(iv)
    return merged


def _flip(merged: list[Interval], now: datetime) -> tuple[datetime, str] | None:
    for iv in merged:
        if iv.start <= now < iv.end:
            return iv.end, iv.end_label
        if iv.start > now:
            return iv.start, iv.start_label
    return None


__all__ = ["Edge", "Interval", "Schedule"]
