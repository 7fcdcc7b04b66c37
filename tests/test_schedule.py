"""Schedule windows against astral's own sun times, DST days, polar day and night; the light relay
switched with the schedule on gpiozero's MockFactory (a simulated pin whose level is read back)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import astral.sun
import pytest
from astral import Observer
from gpiozero.pins.mock import MockFactory

from edge.config import LightConfig, ScheduleConfig, SiteConfig, WindowConfig, parse_config
from edge.errors import ConfigError, TrapcamError
from edge.light import LightController
from edge.schedule import Schedule

BERLIN = ZoneInfo("Europe/Berlin")
BERLIN_SITE = SiteConfig(latitude=52.52, longitude=13.405, elevation_m=34, timezone="Europe/Berlin")
BERLIN_OBS = Observer(52.52, 13.405, 34)
SVALBARD_SITE = SiteConfig(latitude=78.22, longitude=15.65, timezone="Arctic/Longyearbyen")
SVALBARD_OBS = Observer(78.22, 15.65, 0)
UTC = timezone.utc


def schedule(*windows: tuple[str, str], site: SiteConfig = BERLIN_SITE) -> Schedule:
    return Schedule(ScheduleConfig(windows=[WindowConfig(start=s, end=e) for s, e in windows]), site)


def local(day: date, hh: int, mm: int = 0, zone: ZoneInfo = BERLIN) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=zone)


def sun(day: date, obs: Observer = BERLIN_OBS, zone: ZoneInfo = BERLIN) -> dict[str, datetime]:
    return astral.sun.sun(obs, day, tzinfo=zone)


# ---------------------------------------------------------------- sun-relative windows


def test_sunset_to_sunrise_matches_astral_in_berlin() -> None:
    s = schedule(("sunset-30m", "sunrise+15m"))
    day = date(2026, 7, 1)
    start = sun(day)["sunset"] - timedelta(minutes=30)
    end = sun(day + timedelta(days=1))["sunrise"] + timedelta(minutes=15)
    [(got_start, got_end)] = s.windows_for(day)
    assert got_start == start.astimezone(UTC)
    assert got_end == end.astimezone(UTC)
    assert got_start.tzinfo == UTC
    # In Berlin on 1 July 2026 sunset is 21:34 local: the window opens 21:04 and ends 05:01 the next day.
    assert start.strftime("%H:%M") == "21:04" and end.strftime("%H:%M") == "05:01"


def test_is_active_at_the_edges_and_after_midnight() -> None:
    s = schedule(("sunset-30m", "sunrise+15m"))
    day = date(2026, 7, 1)
    start = sun(day)["sunset"] - timedelta(minutes=30)
    end = sun(day + timedelta(days=1))["sunrise"] + timedelta(minutes=15)
    assert not s.is_active(start - timedelta(seconds=1))
    assert s.is_active(start)
    assert s.is_active(local(day + timedelta(days=1), 2))  # 02:00: inside yesterday's window
    assert s.is_active(end - timedelta(seconds=1))
    assert not s.is_active(end)
    assert not s.is_active(local(day + timedelta(days=1), 12))


def test_dawn_dusk_and_noon_match_astral() -> None:
    s = schedule(("dawn", "noon-1h"), ("dusk+1h", "dawn-30m"))
    day = date(2026, 7, 1)
    times = sun(day)
    morning, night = s.windows_for(day)
    assert morning == (times["dawn"].astimezone(UTC), (times["noon"] - timedelta(hours=1)).astimezone(UTC))
    assert night[0] == (times["dusk"] + timedelta(hours=1)).astimezone(UTC)
    assert night[1] == (sun(day + timedelta(days=1))["dawn"] - timedelta(minutes=30)).astimezone(UTC)


def test_next_change_and_describe() -> None:
    s = schedule(("sunset-30m", "sunrise+15m"))
    day = date(2026, 7, 1)
    start = sun(day)["sunset"] - timedelta(minutes=30)
    end = sun(day + timedelta(days=1))["sunrise"] + timedelta(minutes=15)
    noon = local(day, 12)
    assert s.next_change(noon) == start.astimezone(UTC)
    assert s.describe(noon) == f"inactive until {start:%H:%M} (sunset-30m)"
    night = local(day, 23)
    assert s.next_change(night) == end.astimezone(UTC)
    assert s.describe(night) == f"active until {end:%H:%M} (sunrise+15m)"


def test_overlapping_windows_merge_for_next_change() -> None:
    s = schedule(("20:00", "23:00"), ("22:00", "02:00"), ("02:00", "03:00"))
    day = date(2026, 7, 1)
    assert s.next_change(local(day, 21)) == local(day + timedelta(days=1), 3).astimezone(UTC)
    assert s.describe(local(day, 21)) == "active until 03:00 (03:00)"
    assert s.next_change(local(day + timedelta(days=1), 4)) == local(day + timedelta(days=1), 20)


def test_no_windows_means_always_active() -> None:
    s = Schedule(ScheduleConfig(), SiteConfig())
    moment = datetime(2026, 7, 1, 12, tzinfo=UTC)
    assert s.is_active(moment) and s.is_active(moment + timedelta(hours=12))
    assert s.next_change(moment) is None
    assert s.windows_for(moment.date()) == []
    assert "always active" in s.describe(moment)


# ---------------------------------------------------------------- clock windows and DST


def test_clock_window_past_midnight_belongs_to_its_evening() -> None:
    s = schedule(("21:00", "05:00"))
    day = date(2026, 7, 1)
    assert s.windows_for(day) == [(datetime(2026, 7, 1, 19, tzinfo=UTC), datetime(2026, 7, 2, 3, tzinfo=UTC))]
    assert s.is_active(local(date(2026, 7, 2), 2))
    assert not s.is_active(local(date(2026, 7, 2), 5))
    assert not s.is_active(local(date(2026, 7, 1), 20, 59))


def test_dst_spring_forward_night_is_an_hour_shorter() -> None:
    s = schedule(("21:00", "05:00"))
    # Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST.
    [(start, end)] = s.windows_for(date(2026, 3, 28))
    assert start == datetime(2026, 3, 28, 20, tzinfo=UTC)  # 21:00 CET
    assert end == datetime(2026, 3, 29, 3, tzinfo=UTC)  # 05:00 CEST
    assert end - start == timedelta(hours=7)
    # A clock time inside the gap is read with the offset before the change (02:30 CET = 03:30 CEST).
    [(gap_start, gap_end)] = schedule(("02:30", "04:00")).windows_for(date(2026, 3, 29))
    assert gap_start == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert gap_end - gap_start == timedelta(minutes=30)


def test_dst_fall_back_night_is_an_hour_longer() -> None:
    s = schedule(("21:00", "05:00"))
    [(start, end)] = s.windows_for(date(2026, 10, 24))
    assert start == datetime(2026, 10, 24, 19, tzinfo=UTC)  # 21:00 CEST
    assert end == datetime(2026, 10, 25, 4, tzinfo=UTC)  # 05:00 CET
    assert end - start == timedelta(hours=9)
    assert s.is_active(datetime(2026, 10, 25, 0, 30, tzinfo=UTC))  # 02:30 CEST, the first of the two
    # A clock time that happens twice is the first of the two (02:30 CEST = 00:30 UTC).
    [(twice_start, twice_end)] = schedule(("02:30", "04:00")).windows_for(date(2026, 10, 25))
    assert twice_start == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert twice_end - twice_start == timedelta(hours=2, minutes=30)  # 04:00 CET = 03:00 UTC


@pytest.mark.parametrize(
    "day", [date(2026, 3, 28), date(2026, 3, 29), date(2026, 10, 24), date(2026, 10, 25)]
)
def test_sun_windows_on_dst_days_match_astral(day: date) -> None:
    s = schedule(("sunset", "sunrise"))
    [(start, end)] = s.windows_for(day)
    assert start == sun(day)["sunset"].astimezone(UTC)
    assert end == sun(day + timedelta(days=1))["sunrise"].astimezone(UTC)
    assert timedelta(hours=9) < end - start < timedelta(hours=15)


# ---------------------------------------------------------------- polar day and night (Svalbard, 78° N)


def _first_event(event: Callable[..., datetime], day: date) -> tuple[date, datetime]:
    """The first date after `day` on which astral finds the event at Svalbard, and its time."""
    for ahead in range(1, 200):
        try:
            return day + timedelta(days=ahead), event(SVALBARD_OBS, day + timedelta(days=ahead))
        except ValueError:
            continue
    raise AssertionError("no such event within 200 days")


def _hours(day: date) -> list[datetime]:
    return [local(day, h, 0, ZoneInfo("Arctic/Longyearbyen")) for h in range(24)]


def test_polar_midnight_sun_june(caplog: pytest.LogCaptureFixture) -> None:
    day = date(2026, 6, 21)
    with pytest.raises(ValueError):
        astral.sun.sunset(SVALBARD_OBS, day)  # the premise: the sun never sets
    night = schedule(("sunset", "sunrise"), site=SVALBARD_SITE)
    daylight = schedule(("sunrise", "sunset"), site=SVALBARD_SITE)
    with caplog.at_level(logging.INFO, logger="edge.schedule"):
        assert night.windows_for(day) == []
        assert not any(night.is_active(t) for t in _hours(day))
        assert not any(night.is_active(t) for t in _hours(day + timedelta(days=1)))
    # "Logged once": many days and calls, one line for this window and state.
    notes = [r for r in caplog.records if "window 0" in r.getMessage() and "inactive" in r.getMessage()]
    assert len(notes) == 1
    assert all(daylight.is_active(t) for t in _hours(day))
    # The day window stays open until the first sunset after the midnight sun, astral's time for it.
    first, sunset = _first_event(astral.sun.sunset, day)
    assert date(2026, 8, 1) < first < date(2026, 9, 15)
    assert daylight.next_change(_hours(day)[12]) == sunset
    assert daylight.describe(_hours(day)[12]) == (
        f"active until {sunset.astimezone(ZoneInfo('Arctic/Longyearbyen')):%Y-%m-%d %H:%M} (sunset)"
    )
    assert night.next_change(_hours(day)[12]) == _first_event(astral.sun.sunset, day)[1]


def test_polar_night_december() -> None:
    day = date(2026, 12, 21)
    with pytest.raises(ValueError):
        astral.sun.sunrise(SVALBARD_OBS, day)  # the premise: the sun never rises
    night = schedule(("sunset", "sunrise"), site=SVALBARD_SITE)
    daylight = schedule(("sunrise", "sunset"), site=SVALBARD_SITE)
    assert all(night.is_active(t) for t in _hours(day))
    assert not any(daylight.is_active(t) for t in _hours(day))
    # The night window stays open until the first sunrise of the year, exactly astral's time for it.
    first, sunrise = _first_event(astral.sun.sunrise, day)
    assert date(2027, 2, 1) < first < date(2027, 3, 1)
    assert night.next_change(_hours(day)[12]) == sunrise
    assert night.describe(_hours(day)[12]).startswith(f"active until {first.isoformat()}")


def test_white_nights_dusk_window_is_inactive_but_sunset_window_works() -> None:
    # Trondheim in late June: the sun sets, but never reaches civil dusk (6° below the horizon).
    site = SiteConfig(latitude=63.43, longitude=10.39, timezone="Europe/Oslo")
    day = date(2026, 6, 21)
    assert schedule(("dusk", "dawn"), site=site).windows_for(day) == []
    [(start, end)] = schedule(("sunset", "sunrise"), site=site).windows_for(day)
    assert timedelta(hours=2) < end - start < timedelta(hours=5)


# ---------------------------------------------------------------- bad edges


@pytest.mark.parametrize(
    ("start", "end", "words"),
    [
        ("sundown", "05:00", "schedule.windows.0.start: got 'sundown'"),
        ("21:00", "25:00", "schedule.windows.0.end: got '25:00'"),
        ("sunset+13h", "sunrise", "at most 12 h"),
        ("sunset", "sunset", "two different edges"),
    ],
)
def test_bad_edges_are_config_errors(start: str, end: str, words: str) -> None:
    cfg = ScheduleConfig.model_construct(windows=[WindowConfig.model_construct(start=start, end=end)])
    with pytest.raises(ConfigError, match=words.replace("+", r"\+").replace(".", r"\.")) as err:
        Schedule(cfg, BERLIN_SITE)
    assert "\n" not in str(err.value)


def test_sun_edges_need_a_place() -> None:
    with pytest.raises(ConfigError, match=r"site\.latitude"):
        schedule(("sunset", "05:00"), site=SiteConfig())
    # Clock windows need no place.
    assert schedule(("21:00", "05:00"), site=SiteConfig()).is_active(datetime(2026, 7, 1, 23, tzinfo=UTC))


def test_offset_too_large_from_a_config_file() -> None:
    """Refused when the config is read (the export day is decided from the windows), naming the key."""
    with pytest.raises(ConfigError, match=r"schedule\.windows\.0\.start: got 'sunset\+30h'.*at most 12 h"):
        parse_config(
            "source: {kind: synthetic}\nsite: {latitude: 52.5, longitude: 13.4}\n"
            "schedule: {windows: [{start: sunset+30h, end: sunrise}]}\n"
        )


def test_naive_time_is_refused() -> None:
    with pytest.raises(ConfigError, match="no time zone"):
        schedule(("21:00", "05:00")).is_active(datetime(2026, 7, 1, 23))


# ---------------------------------------------------------------- the light


@pytest.mark.parametrize("active_high", [True, False])
def test_light_follows_the_schedule_on_a_mock_pin(active_high: bool) -> None:
    factory = MockFactory()
    s = schedule(("sunset-30m", "sunrise+15m"))
    light = LightController(LightConfig(gpio_pin=17, active_high=active_high), pin_factory=factory)
    pin = factory.pin(17)
    assert not light.is_on and pin.state == (not active_high)  # starts off
    moment = local(date(2026, 7, 1), 12)
    seen = set()
    for _ in range(24 * 6):  # a day and a night in 10-minute steps, as the loop would
        active = s.is_active(moment)
        light.set(active)
        assert light.is_on == active
        assert pin.state == (active if active_high else not active)
        seen.add(active)
        moment += timedelta(minutes=10)
    assert seen == {True, False}
    light.set(True)
    light.close()
    assert pin.state == (not active_high)  # off on close
    assert not light.is_on
    light.close()  # idempotent
    with pytest.raises(TrapcamError, match="closed"):
        light.set(True)


def test_light_without_gpiozero_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero", None)  # import gpiozero -> ImportError
    with pytest.raises(TrapcamError, match="apt install python3-gpiozero"):
        LightController(LightConfig(gpio_pin=17))


def test_light_pin_in_use_is_a_clear_error() -> None:
    factory = MockFactory()
    first = LightController(LightConfig(gpio_pin=22), pin_factory=factory)
    with pytest.raises(TrapcamError, match="GPIO pin 22"):
        LightController(LightConfig(gpio_pin=22), pin_factory=factory)
    first.close()


@pytest.mark.parametrize(
    ("site", "window"),
    [
        (SVALBARD_SITE, ("sunset", "sunrise")),
        (SVALBARD_SITE, ("dawn+30m", "dusk")),
        (BERLIN_SITE, ("sunset-30m", "sunrise+15m")),
        (SiteConfig(latitude=63.43, longitude=10.39, timezone="Europe/Oslo"), ("dusk", "03:00")),
    ],
)
def test_next_change_agrees_with_is_active_all_year(site: SiteConfig, window: tuple[str, str]) -> None:
    """Every 7 hours for a year: the state holds until next_change and flips exactly there."""
    s = schedule(window, site=site)
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    flips = 0
    while moment < datetime(2027, 1, 1, tzinfo=UTC):
        state = s.is_active(moment)
        change = s.next_change(moment)
        assert change is not None and change > moment
        assert s.is_active(change - timedelta(microseconds=1)) == state
        assert s.is_active(change) != state
        flips += state
        moment += timedelta(hours=7)
    assert flips > 0
