"""Deploy windows and freezes, as tables: plain, midnight-spanning, DST, freezes."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from tars_operators.config.schema import Schedule
from tars_operators.plan.windows import window_status

pytestmark = pytest.mark.unit

UTC = timezone.utc
OFFICE = {"timezone": "Europe/Amsterdam",
          "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}]}
NIGHT = {"timezone": "Europe/Amsterdam",
         "windows": [{"days": ["fri"], "start": "22:00", "end": "02:00"}]}
# 2024-03-31 (Sunday): Europe/Amsterdam skips 02:00-03:00. 2024-10-27 (Sunday): 02:00-03:00 twice.
DST = {"timezone": "Europe/Amsterdam", "windows": [{"days": ["sun"], "start": "02:30", "end": "04:00"}]}
FREEZE = {**OFFICE, "freezes": [{"start": "2024-12-24", "end": "2024-12-26", "reason": "xmas"},
                                {"start": "2024-12-30T12:00", "end": "2024-12-30T15:00"}]}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("schedule", "now", "is_open", "next_open"), [
    ({}, "2024-01-06T03:00", True, None),  # no windows: always open
    # Office hours, Amsterdam winter time (UTC+1): 09:00-17:00 local is 08:00-16:00 UTC.
    (OFFICE, "2024-01-08T08:00", True, None),  # Monday 09:00 local: start is inclusive
    (OFFICE, "2024-01-08T15:59", True, None),
    (OFFICE, "2024-01-08T16:00", False, "2024-01-09T08:00"),  # end is exclusive
    (OFFICE, "2024-01-06T12:00", False, "2024-01-08T08:00"),  # Saturday → Monday
    (OFFICE, "2024-07-08T07:30", True, None),  # summer time (UTC+2): 09:30 local
    # Friday 22:00 → Saturday 02:00: the window belongs to the day it opens.
    (NIGHT, "2024-01-05T21:00", True, None),  # Fri 22:00 local
    (NIGHT, "2024-01-06T00:59", True, None),  # Sat 01:59 local, still Friday's window
    (NIGHT, "2024-01-06T01:00", False, "2024-01-12T21:00"),  # Sat 02:00 local: closed
    (NIGHT, "2024-01-06T21:30", False, "2024-01-12T21:00"),  # Sat 22:30: not a window day
    # Spring forward: 02:30 does not exist on 2024-03-31; the window opens at 03:00 CEST.
    (DST, "2024-03-30T12:00", False, "2024-03-31T01:00"),
    (DST, "2024-03-31T01:30", True, None),  # 03:30 CEST
    (DST, "2024-03-31T02:00", False, "2024-04-07T00:30"),  # 04:00 CEST: closed
    # Fall back: 02:30 happens twice; the first one opens the window.
    (DST, "2024-10-27T00:29", False, "2024-10-27T00:30"),
    (DST, "2024-10-27T01:45", True, None),  # second 02:45 (CET)
    # Freezes: whole days, inclusive, and datetime ranges; they override windows.
    (FREEZE, "2024-12-24T10:00", False, "2024-12-27T08:00"),
    (FREEZE, "2024-12-26T22:59", False, "2024-12-27T08:00"),  # 23:59 local on the last day
    (FREEZE, "2024-12-30T11:00", False, "2024-12-30T14:00"),  # 12:00 local, freeze until 15:00
    (FREEZE, "2024-12-30T14:00", True, None),
])
def test_window_table(schedule: dict[str, Any], now: str, is_open: bool, next_open: str | None) -> None:
    status = window_status(Schedule.model_validate(schedule), at(now))
    assert (status.open, status.next_open) == (is_open, at(next_open) if next_open else None), status.reason
    if status.next_open is not None:
        assert status.next_open.tzinfo is UTC


def test_frozen_status_names_the_freeze() -> None:
    status = window_status(Schedule.model_validate(FREEZE), at("2024-12-25T10:00"))
    assert status.frozen_by is not None and status.frozen_by.reason == "xmas"
    assert status.reason == "frozen 2024-12-24 to 2024-12-26: xmas"


def test_reasons_are_readable() -> None:
    schedule = Schedule.model_validate(OFFICE)
    assert window_status(schedule, at("2024-01-08T10:00")).reason == (
        "inside window mon,tue,wed,thu,fri 09:00-17:00 (Europe/Amsterdam)")
    assert window_status(schedule, at("2024-01-06T12:00")).reason == (
        "outside deploy windows (Europe/Amsterdam); next opens 2024-01-08 08:00 UTC")


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        window_status(Schedule(), datetime(2024, 1, 1))
