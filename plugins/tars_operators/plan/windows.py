"""Deploy windows and freezes: is releasing allowed at a given instant, and if not, when?

Windows are weekdays + ``HH:MM`` ranges in the schedule's timezone; an end before the start
spans midnight (the day is the day the window opens). No windows: always open. Freezes close
everything: a date bound covers the whole day (inclusive), a datetime bound is an instant (the
freeze ends at ``end``). Pure: ``now`` is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from tars_operators.config.schema import Freeze, Schedule, Window

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SEARCH_STEPS = 500  # bound on window/freeze hops when looking for the next opening


@dataclass(frozen=True)
class WindowStatus:
    """Whether a release may run now; if not, why and when it may (aware UTC)."""

    open: bool
    frozen_by: Freeze | None
    next_open: datetime | None  # None when open now, or when nothing ever opens
    reason: str


def window_status(schedule: Schedule, now: datetime) -> WindowStatus:
    """The window/freeze status of ``schedule`` at ``now`` (an aware datetime)."""
    if now.tzinfo is None:
        raise ValueError("window_status needs an aware datetime (e.g. datetime.now(timezone.utc))")
    tz = ZoneInfo(schedule.timezone)
    freeze = frozen_at(schedule, now)
    if freeze is not None:
        start, end = freeze_bounds(freeze, tz)
        opens = next_open(schedule, end)
        return WindowStatus(False, freeze, opens, f"frozen {_span(freeze)}"
                            f"{': ' + freeze.reason if freeze.reason else ''}")
    if not schedule.windows:
        return WindowStatus(True, None, None, "no deploy windows: always open")
    window = window_at(schedule.windows, now.astimezone(tz))
    if window is not None:
        return WindowStatus(True, None, None, f"inside window {describe_window(window)}"
                            f" ({schedule.timezone})")
    opens = next_open(schedule, now)
    when = f"; next opens {opens:%Y-%m-%d %H:%M} UTC" if opens else ""
    return WindowStatus(False, None, opens, f"outside deploy windows ({schedule.timezone}){when}")


def describe_window(window: Window) -> str:
    """``mon,tue 09:00-17:00``."""
    return f"{','.join(window.days)} {window.start}-{window.end}"


def window_at(windows: tuple[Window, ...], local: datetime) -> Window | None:
    """The window open at the local wall time ``local``, if any."""
    clock = local.time().replace(tzinfo=None)
    today, yesterday = DAYS[local.weekday()], DAYS[(local.weekday() - 1) % 7]
    for window in windows:
        start, end = _clock(window.start), _clock(window.end)
        if start < end:
            if today in window.days and start <= clock < end:
                return window
        elif (today in window.days and clock >= start) or (yesterday in window.days and clock < end):
            return window
    return None


def frozen_at(schedule: Schedule, now: datetime) -> Freeze | None:
    """The first freeze covering ``now``, if any."""
    tz = ZoneInfo(schedule.timezone)
    for freeze in schedule.freezes:
        start, end = freeze_bounds(freeze, tz)
        if start <= now < end:
            return freeze
    return None


def freeze_bounds(freeze: Freeze, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) of a freeze as aware datetimes; a date end includes that whole day."""
    return _bound(freeze.start, tz, end=False), _bound(freeze.end, tz, end=True)


def next_open(schedule: Schedule, after: datetime) -> datetime | None:
    """The first instant at or after ``after`` when releases are allowed, in UTC."""
    tz = ZoneInfo(schedule.timezone)
    moment = after
    for _ in range(_SEARCH_STEPS):
        freeze = frozen_at(schedule, moment)
        if freeze is not None:
            moment = freeze_bounds(freeze, tz)[1]
            continue
        if not schedule.windows or window_at(schedule.windows, moment.astimezone(tz)):
            return moment.astimezone(timezone.utc)
        following = _next_start(schedule.windows, moment, tz)
        if following is None:
            return None
        moment = following
    return None


def _next_start(windows: tuple[Window, ...], after: datetime, tz: ZoneInfo) -> datetime | None:
    """The earliest window start strictly after ``after`` (within the next 8 days)."""
    local_day = after.astimezone(tz).date()
    best: datetime | None = None
    for offset in range(0, 9):
        day = local_day + timedelta(days=offset)
        for window in windows:
            if DAYS[day.weekday()] not in window.days:
                continue
            start = _instant(datetime.combine(day, _clock(window.start)), tz)
            if start > after and (best is None or start < best):
                best = start
        if best is not None:
            return best
    return best


def _instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """The first instant whose local wall time in ``tz`` is at or after ``wall`` (UTC).

    For a wall time that does not exist (02:30 on a spring-forward day) that is the moment
    the clocks jump; for one that happens twice (fall back), the first occurrence.
    """
    first = wall.replace(tzinfo=tz, fold=0).astimezone(timezone.utc)
    other = wall.replace(tzinfo=tz, fold=1).astimezone(timezone.utc)
    if other >= first:  # an ordinary or a repeated wall time
        return first
    # A gap: local time is before ``wall`` at ``other`` and past it at ``first``; bisect on
    # whole seconds for the jump.
    low, high = 0, int((first - other).total_seconds())
    while high - low > 1:
        middle = (low + high) // 2
        moment = other + timedelta(seconds=middle)
        if moment.astimezone(tz).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return other + timedelta(seconds=high)


def _clock(hhmm: str) -> time:
    hours, minutes = hhmm.split(":")
    return time(int(hours), int(minutes))


def _bound(text: str, tz: ZoneInfo, *, end: bool) -> datetime:
    text = text.strip()
    if len(text) == 10:
        day = date.fromisoformat(text) + timedelta(days=1 if end else 0)
        return datetime.combine(day, time(0), tzinfo=tz)
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)


def _span(freeze: Freeze) -> str:
    return f"{freeze.start} to {freeze.end}" if freeze.start != freeze.end else freeze.start
