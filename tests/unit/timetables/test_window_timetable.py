"""WindowTimetable: cron ticks inside deploy windows, outside freezes; round-trips."""

from __future__ import annotations

from datetime import datetime, timezone
from unittest import mock

import pendulum
import pytest

from airflow.timetables.base import DataInterval, TimeRestriction
from tars_operators.config.schema import Schedule
from tars_operators.timetables import WindowTimetable

pytestmark = pytest.mark.unit

PARIS = Schedule.model_validate({
    "timezone": "Europe/Paris",
    "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}],
    "freezes": [{"start": "2025-12-24", "end": "2025-12-26", "reason": "xmas"}],
})
NO_CATCHUP = TimeRestriction(earliest=pendulum.datetime(2024, 1, 1), latest=None, catchup=False)


def utc(*args: int) -> pendulum.DateTime:
    return pendulum.datetime(*args, tz="UTC")


def next_run(tt: WindowTimetable, now: pendulum.DateTime, last: pendulum.DateTime | None = None,
             restriction: TimeRestriction = NO_CATCHUP) -> pendulum.DateTime | None:
    with mock.patch("tars_operators.timetables.utcnow", return_value=now):
        info = tt.next_dagrun_info(
            last_automated_data_interval=DataInterval(last, last) if last else None,
            restriction=restriction)
    return info.run_after if info else None


def test_hourly_cron_only_inside_the_window_in_the_app_timezone() -> None:
    tt = WindowTimetable("30 * * * *", schedule=PARIS)
    # Friday 2025-11-28 18:10 Paris (17:10 UTC): closed until Monday 09:00 Paris = 08:00 UTC;
    # the first tick inside is 09:30 Paris.
    assert next_run(tt, utc(2025, 11, 28, 17, 10)) == utc(2025, 12, 1, 8, 30)
    # Inside the window: the next tick
    assert next_run(tt, utc(2025, 12, 1, 10, 40)) == utc(2025, 12, 1, 11, 30)
    # After a run at 15:30 Paris the next is 16:30 Paris; after 16:30 it is Tuesday 09:30.
    assert next_run(tt, utc(2025, 12, 1, 14, 31), last=utc(2025, 12, 1, 14, 30)) == \
        utc(2025, 12, 1, 15, 30)
    assert next_run(tt, utc(2025, 12, 1, 15, 31), last=utc(2025, 12, 1, 15, 30)) == \
        utc(2025, 12, 2, 8, 30)


def test_a_tick_just_missed_still_runs_but_an_old_one_does_not() -> None:
    tt = WindowTimetable("0 * * * *", schedule=PARIS)
    # 10:00 Paris tick, asked at 10:02 (a re-parse right after the tick): run it late
    assert next_run(tt, utc(2025, 12, 1, 9, 2)) == utc(2025, 12, 1, 9, 0)
    # ... unless it already ran
    assert next_run(tt, utc(2025, 12, 1, 9, 2), last=utc(2025, 12, 1, 9, 0)) == \
        utc(2025, 12, 1, 10, 0)
    # 20 minutes late: wait for the next tick
    assert next_run(tt, utc(2025, 12, 1, 9, 20)) == utc(2025, 12, 1, 10, 0)


def test_freezes_are_skipped() -> None:
    tt = WindowTimetable("0 10 * * *", schedule=PARIS)
    # Tue 23 Dec 10:00 Paris runs; 24-26 Dec frozen; 27/28 weekend → Mon 29 Dec 10:00 Paris
    assert next_run(tt, utc(2025, 12, 23, 8, 0)) == utc(2025, 12, 23, 9, 0)
    assert next_run(tt, utc(2025, 12, 23, 9, 30), last=utc(2025, 12, 23, 9, 0)) == \
        utc(2025, 12, 29, 9, 0)


def test_catchup_walks_allowed_ticks_from_the_last_run() -> None:
    tt = WindowTimetable("0 12 * * *", schedule=PARIS)
    catchup = TimeRestriction(earliest=utc(2025, 11, 28), latest=None, catchup=True)
    # Friday 12:00 Paris, then Monday (the weekend is outside the window)
    assert next_run(tt, utc(2025, 12, 10), restriction=catchup) == utc(2025, 11, 28, 11, 0)
    assert next_run(tt, utc(2025, 12, 10), last=utc(2025, 11, 28, 11, 0),
                    restriction=catchup) == utc(2025, 12, 1, 11, 0)


def test_no_windows_means_plain_cron_in_the_timezone() -> None:
    tt = WindowTimetable("0 9 * * *", schedule={"timezone": "America/New_York"})
    assert next_run(tt, utc(2025, 7, 1, 12, 0)) == utc(2025, 7, 1, 13, 0)  # 09:00 EDT
    assert next_run(tt, utc(2025, 12, 1, 15, 0)) == utc(2025, 12, 2, 14, 0)  # 09:00 EST


def test_a_window_that_never_matches_the_cron_never_runs() -> None:
    sched = {"timezone": "UTC", "windows": [{"days": ["mon"], "start": "09:00", "end": "09:30"}]}
    assert next_run(WindowTimetable("45 * * * *", schedule=sched), utc(2025, 12, 1)) is None


def test_serialize_round_trip_and_description() -> None:
    tt = WindowTimetable("*/15 * * * *", schedule=PARIS)
    data = tt.serialize()
    assert data["expression"] == "*/15 * * * *" and data["schedule"]["timezone"] == "Europe/Paris"
    again = WindowTimetable.deserialize(data)
    assert again == tt and again.serialize() == data
    assert "mon,tue,wed,thu,fri 09:00-17:00, Europe/Paris" in tt.description
    assert tt.summary == "*/15 * * * * in deploy windows"


def test_registered_by_the_plugin() -> None:
    import tars_plugin

    assert WindowTimetable in tars_plugin.TarsPlugin.timetables


def test_allowed_is_the_window_status() -> None:
    tt = WindowTimetable("0 * * * *", schedule=PARIS)
    assert tt.allowed(datetime(2025, 12, 1, 9, 0, tzinfo=timezone.utc))
    assert not tt.allowed(datetime(2025, 12, 1, 16, 0, tzinfo=timezone.utc))  # 17:00 Paris
