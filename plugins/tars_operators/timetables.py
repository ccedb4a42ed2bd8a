"""``WindowTimetable``: cron ticks that fall inside an app's deploy windows (and outside freezes).

A scheduled canary must not start outside a deploy window: with ``cron: "0 * * * *"`` and a
window ``mon-fri 09:00-17:00``, the runs are 09:00, 10:00, …, 16:00 on weekdays, in the app's
timezone. Registered by the Tars plugin (``plugins/tars_plugin.py``) so the scheduler and the
api-server can deserialize it.

Without catchup (Tars canaries), a tick missed by at most ``GRACE`` still runs when releasing
is allowed both at the tick and now — so a re-parse just after a tick never skips it — and an
older one never does (no surprise canary long after its time).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Mapping

from airflow._shared.timezones.timezone import coerce_datetime, utcnow
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction
from airflow.timetables.trigger import CronTriggerTimetable

from tars_operators.config.schema import Schedule
from tars_operators.plan.windows import describe_window, window_status

if TYPE_CHECKING:
    from pendulum import DateTime

GRACE = timedelta(minutes=5)
_HOPS = 1000  # bound on window hops when looking for the next allowed tick


def _schedule(schedule: Schedule | Mapping[str, Any]) -> Schedule:
    """Only what decides *when* (timezone, windows, freezes), as the config model."""
    data = schedule.model_dump(mode="json") if isinstance(schedule, Schedule) else dict(schedule)
    return Schedule.model_validate(
        {k: data[k] for k in ("timezone", "windows", "freezes") if k in data}
    )


def _utc(moment: datetime) -> datetime:
    return datetime.fromtimestamp(moment.timestamp(), tz=timezone.utc)


class WindowTimetable(CronTriggerTimetable):
    """Runs at the ticks of ``cron`` (in the schedule's timezone) when releasing is allowed."""

    def __init__(self, cron: str, *, schedule: Schedule | Mapping[str, Any]) -> None:
        self._schedule = _schedule(schedule)
        super().__init__(cron, timezone=self._schedule.timezone)
        windows = "; ".join(describe_window(w) for w in self._schedule.windows) or "always"
        self.description = (f"{self.description or self._expression}, only inside deploy windows "
                            f"({windows}, {self._schedule.timezone}) and outside freezes")

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> WindowTimetable:
        return cls(data["expression"], schedule=data["schedule"])

    def serialize(self) -> dict[str, Any]:
        return {"expression": self._expression, "schedule": self._schedule.model_dump(
            mode="json", include={"timezone", "windows", "freezes"})}

    @property
    def summary(self) -> str:
        return f"{self._expression} in deploy windows"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WindowTimetable):
            return NotImplemented
        return (self._expression, self._schedule) == (other._expression, other._schedule)

    def __hash__(self) -> int:
        return hash((self._expression, self._schedule.model_dump_json()))

    def allowed(self, moment: datetime) -> bool:
        """Whether a release may start at ``moment`` (inside a window, no freeze)."""
        return window_status(self._schedule, _utc(moment)).open

    def next_allowed_tick(self, moment: datetime) -> DateTime | None:
        """The first cron tick at or after ``moment`` when releasing is allowed (UTC)."""
        tick = self._align_to_next(coerce_datetime(moment))
        for _ in range(_HOPS):
            status = window_status(self._schedule, _utc(tick))
            if status.open:
                return tick
            if status.next_open is None:
                return None  # nothing ever opens again (a freeze without end, no windows)
            opens = coerce_datetime(status.next_open)
            tick = self._align_to_next(opens) if opens > tick else self._get_next(tick)
        return None

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        restriction: TimeRestriction,
    ) -> DagRunInfo | None:
        last = last_automated_data_interval.end if last_automated_data_interval else None
        earliest = restriction.earliest
        if restriction.catchup:
            start = self._get_next(last) if last else (earliest or coerce_datetime(utcnow()))
            tick = self.next_allowed_tick(start)
        else:
            now = coerce_datetime(utcnow())
            tick = self._missed_tick(now, last, earliest)
            if tick is None:
                floor = max(m for m in (now, earliest, last and self._get_next(last)) if m)
                tick = self.next_allowed_tick(floor)
        if tick is None or (restriction.latest is not None and tick > restriction.latest):
            return None
        return DagRunInfo.exact(tick)

    def _missed_tick(self, now: Any, last: Any, earliest: Any) -> Any:
        """The tick just before ``now``, if it is recent, allowed, and not run yet."""
        tick = self._align_to_prev(now)
        if now - tick > GRACE or (last is not None and tick <= last):
            return None
        if earliest is not None and tick < earliest:
            return None
        return tick if self.allowed(tick) and self.allowed(now) else None
