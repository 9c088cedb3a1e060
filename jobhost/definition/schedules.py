"""Schedules and their slots: pure functions of a schedule and an instant.

A *slot* is the instant a run is due. Slots never depend on when the process
started, so a restart, a second host or a backfill all agree on them.

Alignment rules (written out in docs/jobs.md, "Schedules, slots and time zones"):
- ``every(N).seconds|minutes|hours`` are fixed elapsed intervals counted from
  the Unix epoch (1970-01-01T00:00:00Z), shifted by ``.at()``'s offset. DST
  never changes them: every slot is exactly N units after the previous one.
- ``every(N).days`` fall at ``.at()`` (default 00:00) wall time in the job's
  zone, on the days whose number since 1970-01-01 is a multiple of N.
- ``every(N).weeks`` and ``every().monday`` ... fall at ``.at()`` wall time on
  that weekday (Monday by default), in the weeks whose number since Monday
  1969-12-29 is a multiple of N.
- ``cron("...")`` follows Debian cron, as implemented by cronsim.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo

import schedule as schedule_lib
from cronsim import CronSim, CronSimError

from jobhost.definition.timezones import UTC, get_zone, localize
from jobhost.errors import ScheduleError

_UNIT_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600}
_EPOCH_DAY = dt.date(1970, 1, 1).toordinal()
_MAX_STEPS = 1000
_EPOCH_MONDAY = dt.date(1969, 12, 29).toordinal()
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class Schedule(Protocol):
    """What the engine needs of a schedule: slots before and after an instant."""

    @property
    def zone(self) -> ZoneInfo:
        """The time zone its slots are given in."""

    def next_slot(self, after: dt.datetime) -> dt.datetime | None:
        """The first slot strictly after `after` (aware), in `zone`; None if there is none."""

    def latest_slot(self, at_or_before: dt.datetime) -> dt.datetime | None:
        """The last slot at or before `at_or_before`, in `zone`; None if there is none."""

    def describe(self) -> str:
        """The schedule in words, for `list`."""


def _aware(instant: dt.datetime) -> dt.datetime:
    if instant.tzinfo is None:
        raise ValueError("slots are computed from aware datetimes only")
    return instant


@dataclass(frozen=True, slots=True)
class IntervalSchedule:
    """A `schedule`-library job (``every(N).<unit>[.at()]``) given stable slots."""

    interval: int
    unit: str
    zone: ZoneInfo
    at: dt.time | None = None
    weekday: int | None = None
    until: dt.datetime | None = None

    def next_slot(self, after: dt.datetime) -> dt.datetime | None:
        # In UTC, so that comparisons are in real time: Python ignores `fold` when
        # it compares two datetimes of the same zone.
        after = _aware(after).astimezone(UTC)
        if self.unit in _UNIT_SECONDS:
            period, offset = self._period_offset()
            stamp = after.timestamp()
            k = math.floor((stamp - offset) / period) + 1
            slot = dt.datetime.fromtimestamp(k * period + offset, UTC).astimezone(self.zone)
        else:
            day = after.astimezone(self.zone).date() - dt.timedelta(days=1)
            slot = self._first_on_or_after(day)
            while slot <= after:
                slot = self._first_on_or_after(slot.date() + dt.timedelta(days=1))
        return None if self.until is not None and slot > self.until else slot

    def latest_slot(self, at_or_before: dt.datetime) -> dt.datetime | None:
        at_or_before = _aware(at_or_before).astimezone(UTC)
        if self.until is not None and at_or_before > self.until:
            at_or_before = self.until
        if self.unit in _UNIT_SECONDS:
            period, offset = self._period_offset()
            k = math.floor((at_or_before.timestamp() - offset) / period)
            return dt.datetime.fromtimestamp(k * period + offset, UTC).astimezone(self.zone)
        day = at_or_before.astimezone(self.zone).date() + dt.timedelta(days=1)
        while True:
            day = self._last_on_or_before(day)
            slot = self._localize(day)
            if slot <= at_or_before:
                return slot
            day -= dt.timedelta(days=1)

    def describe(self) -> str:
        unit = self.unit[:-1] if self.interval == 1 else self.unit
        every = f"every {unit}" if self.interval == 1 else f"every {self.interval} {unit}"
        if self.weekday is not None:
            every = f"every {_WEEKDAYS[self.weekday].capitalize()}"
        elif self.unit == "weeks":
            every += " on Monday"
        if self.unit in _UNIT_SECONDS:
            _, offset = self._period_offset()
            return every + (f" (+{offset}s)" if offset else "")
        at = (self.at or dt.time(0)).isoformat("seconds" if (self.at and self.at.second) else "minutes")
        return f"{every} at {at} ({self.zone.key})"

    # -- helpers ---------------------------------------------------------

    def _period_offset(self) -> tuple[int, int]:
        period = self.interval * _UNIT_SECONDS[self.unit]
        if self.at is None:
            return period, 0
        if self.unit == "minutes":
            return period, self.at.second
        return period, self.at.minute * 60 + self.at.second

    def _matches(self, day: dt.date) -> bool:
        if self.unit == "days":
            return (day.toordinal() - _EPOCH_DAY) % self.interval == 0
        weekday = 0 if self.weekday is None else self.weekday
        weeks = (day.toordinal() - _EPOCH_MONDAY) // 7
        return day.weekday() == weekday and weeks % self.interval == 0

    def _localize(self, day: dt.date) -> dt.datetime:
        return localize(dt.datetime.combine(day, self.at or dt.time(0)), self.zone)

    def _first_on_or_after(self, day: dt.date) -> dt.datetime:
        while not self._matches(day):
            day += dt.timedelta(days=1)
        return self._localize(day)

    def _last_on_or_before(self, day: dt.date) -> dt.date:
        while not self._matches(day):
            day -= dt.timedelta(days=1)
        return day


@dataclass(frozen=True)
class CronSchedule:
    """A standard 5-field cron expression, evaluated by cronsim in `zone`."""

    expression: str
    zone: ZoneInfo

    def next_slot(self, after: dt.datetime) -> dt.datetime | None:
        after = _aware(after)
        # cronsim walks fixed-time jobs in wall time; in a repeated (fall-back) hour
        # its answer can be earlier in real time than `after`, so step past those.
        # (Compared as timestamps: Python ignores `fold` within one zone.)
        slots = CronSim(self.expression, after.astimezone(self.zone))
        for _ in range(_MAX_STEPS):
            slot = next(slots, None)
            if slot is None or slot.timestamp() > after.timestamp():
                return slot.astimezone(self.zone) if slot is not None else None
        raise ScheduleError(f"cron({self.expression!r}) found no slot after {after.isoformat()}")

    def latest_slot(self, at_or_before: dt.datetime) -> dt.datetime | None:
        at_or_before = _aware(at_or_before)
        # cronsim's reverse iteration counts dropping the microseconds as its
        # first tick, so a whole-second instant that is itself a slot is kept.
        start = at_or_before.astimezone(self.zone).replace(microsecond=1)
        candidate = next(CronSim(self.expression, start, reverse=True), None)
        limit = at_or_before.timestamp()
        while candidate is not None and candidate.timestamp() > limit:
            candidate = next(CronSim(self.expression, candidate, reverse=True), None)
        if candidate is None:
            return None
        # In a repeated hour the wall-time walk back can pass over a slot that is
        # later in real time; walk forward to the last one at or before the instant.
        while (following := self.next_slot(candidate)) is not None and following.timestamp() <= limit:
            candidate = following
        return candidate.astimezone(self.zone)

    def describe(self) -> str:
        words = CronSim(self.expression, dt.datetime(2000, 1, 1)).explain()
        return f"cron {self.expression!r}: {words} ({self.zone.key})"


def cron(expression: str, tz: str | None = None) -> CronSpec:
    """A standard 5-field cron expression (``"*/15 9-17 * * mon-fri"``) or a macro
    such as ``@daily``; `tz` is an IANA zone (default: the host's zone)."""
    return CronSpec(expression, tz)


@dataclass(frozen=True)
class CronSpec:
    """What `cron(...)` returns: the expression, checked when the job is registered."""

    expression: str
    tz: str | None = None


def build_schedule(spec: object, default_zone: ZoneInfo) -> Schedule:
    """Turn what was passed to ``@job`` into a Schedule, or raise ScheduleError."""
    if isinstance(spec, CronSpec):
        return _build_cron(spec, default_zone)
    if isinstance(spec, schedule_lib.Job):
        return _build_interval(spec, default_zone)
    raise ScheduleError(
        f"the schedule must be every(...) or cron(...), not {spec!r}; "
        "for example @job(every(10).minutes) or @job(cron('0 6 * * mon-fri'))"
    )


def _build_cron(spec: CronSpec, default_zone: ZoneInfo) -> CronSchedule:
    if not isinstance(spec.expression, str):
        raise ScheduleError(f"cron() takes a string such as '0 6 * * mon-fri', not {spec.expression!r}")
    text = " ".join(spec.expression.split())
    text = _CRON_MACROS.get(text.lower(), text)
    fields = len(text.split())
    if fields != 5:
        raise ScheduleError(
            f"cron({spec.expression!r}) has {fields} fields; write the 5 standard ones: minute hour day-of-month month day-of-week"
        )
    text = _normalize_cron(text)
    zone = _zone(spec.tz, default_zone)
    try:
        CronSim(text, dt.datetime(2000, 1, 1))
    except CronSimError as exc:
        never = " (or that day never occurs in the months given)" if "day-of-month" in str(exc) else ""
        raise ScheduleError(
            f"cron({spec.expression!r}): {exc}{never}; the fields are minute 0-59, hour 0-23, day of month 1-31, "
            "month 1-12 or jan-dec, day of week 0-7 or sun-sat"
        ) from exc
    schedule = CronSchedule(text, zone)
    if schedule.next_slot(dt.datetime(2000, 1, 1, tzinfo=UTC)) is None:
        raise ScheduleError(f"cron({spec.expression!r}) never matches a date")
    return schedule


_ONE_VALUE_RANGE = re.compile(r"^(\w+)-\1/\d+$")


def _normalize_cron(text: str) -> str:
    """Work around cronsim 2.8 reading a one-value range with a step ("3-3/2") as "3/2"
    (3 to the end of the field); cron reads it as the one value."""
    fields = []
    for field in text.split():
        parts = [_ONE_VALUE_RANGE.sub(r"\1", part) for part in field.split(",")]
        fields.append(",".join(parts))
    return " ".join(fields)


def _zone(name: object, default_zone: ZoneInfo) -> ZoneInfo:
    if name is None:
        return default_zone
    key = getattr(name, "zone", None) or getattr(name, "key", None) or name  # pytz and zoneinfo objects
    try:
        return get_zone(str(key))
    except ValueError as exc:
        raise ScheduleError(str(exc)) from exc


def _build_interval(job: schedule_lib.Job, default_zone: ZoneInfo) -> IntervalSchedule:
    if job.latest is not None:
        raise ScheduleError(
            f"every({job.interval}).to({job.latest}) picks a random interval after each run, so its runs have no "
            f"stable slots; write every({job.interval}).{job.unit or 'minutes'} or a cron(...) expression instead"
        )
    if job.unit not in ("seconds", "minutes", "hours", "days", "weeks"):
        raise ScheduleError(f"every({job.interval}) needs a unit, for example every({job.interval}).minutes")
    if not isinstance(job.interval, int) or isinstance(job.interval, bool) or job.interval < 1:
        raise ScheduleError(f"every({job.interval!r}) needs a whole number of {job.unit} of at least 1")
    if job.at_time_zone is not None and job.unit in _UNIT_SECONDS and not job.start_day:
        raise ScheduleError(
            f"every({job.interval}).{job.unit}.at(..., tz) cannot use its time zone: {job.unit} are elapsed time "
            "counted from the Unix epoch; for local wall-clock times write cron('0 * * * *', tz='...')"
        )
    zone = _zone(job.at_time_zone, default_zone)
    until = None
    if job.cancel_after is not None:
        # schedule stores until() as a naive time on the machine's clock.
        until = job.cancel_after.astimezone().astimezone(UTC)
    weekday = _WEEKDAYS.index(job.start_day) if job.start_day else None
    return IntervalSchedule(job.interval, job.unit, zone, job.at_time, weekday, until)


def slots_between(schedule: Schedule, start: dt.datetime, end: dt.datetime) -> Iterator[dt.datetime]:
    """Every slot from `start` to `end`, both included."""
    # In UTC: arithmetic on a zoned datetime is wall-clock arithmetic, wrong next to a DST gap.
    slot = schedule.next_slot(start.astimezone(dt.UTC) - dt.timedelta(microseconds=1))
    while slot is not None and slot <= end:
        yield slot
        slot = schedule.next_slot(slot)


def count_slots(schedule: Schedule, start: dt.datetime, end: dt.datetime, limit: int) -> int | None:
    """How many slots the range holds, or None if more than `limit`: counted one by one, so a
    range of millions of slots is refused after `limit` of them, never held in memory."""
    counted = sum(1 for _ in itertools.islice(slots_between(schedule, start, end), limit + 1))
    return None if counted > limit else counted
