"""`next` for cron jobs against an independent reference: a plain minute-by-minute cron matcher.

The reference follows Vixie/Debian cron: day-of-month and day-of-week are ORed
when both are restricted and ANDed when either starts with `*`; jobs with a
fixed minute and hour follow wall-clock time (a time in a spring-forward gap
runs at the first minute after the gap, a repeated time runs once, the first
time); other jobs match every real minute.
"""

from __future__ import annotations

import datetime as dt
import random
from zoneinfo import ZoneInfo

import pytest

from jobhost.definition.schedules import CronSchedule, build_schedule, cron

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
ZONES = ["UTC", "Europe/London", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "Pacific/Chatham"]


def _values(field: str, low: int, high: int, names: list[str] | None = None) -> set[int]:
    values: set[int] = set()
    for part in field.split(","):
        part, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if names:
            for index, name in enumerate(names):
                part = part.replace(name, str(index + (1 if names is MONTHS else 0)))
        if part == "*":
            first, last = low, high
        elif "-" in part:
            first, last = map(int, part.split("-"))
        else:
            first = int(part)
            last = high if step_text else first
        values.update(range(first, last + 1, step))
    return values


class Reference:
    def __init__(self, expression: str):
        minute, hour, dom, month, dow = expression.split()
        self.minutes = _values(minute, 0, 59)
        self.hours = _values(hour, 0, 23)
        self.doms = _values(dom, 1, 31)
        self.months = _values(month, 1, 12, MONTHS)
        self.dows = {d % 7 for d in _values(dow, 0, 7, DAYS)}
        self.day_and = dom.startswith("*") or dow.startswith("*")
        self.wall_clock = not minute.startswith("*") and not hour.startswith("*")

    def day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        in_dom, in_dow = day.day in self.doms, (day.isoweekday() % 7) in self.dows
        return (in_dom and in_dow) if self.day_and else (in_dom or in_dow)

    def following(self, after: dt.datetime, zone: ZoneInfo, count: int) -> list[dt.datetime]:
        found: list[dt.datetime] = []
        if self.wall_clock:
            day = after.astimezone(zone).date() - dt.timedelta(days=1)
            while len(found) < count:
                if self.day_matches(day):
                    for hour in sorted(self.hours):
                        for minute in sorted(self.minutes):
                            instant = _wall_to_instant(dt.datetime.combine(day, dt.time(hour, minute)), zone)
                            if instant > after and (not found or instant > found[-1]):
                                found.append(instant)
                day += dt.timedelta(days=1)
            return found[:count]
        instant = after.astimezone(dt.UTC).replace(second=0, microsecond=0)
        while len(found) < count:
            instant += dt.timedelta(minutes=1)
            local = instant.astimezone(zone)
            if not self.day_matches(local.date()):
                # Skip to the last minute of this local day (cheap, and still exact).
                midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(0), zone)
                instant = max(instant, midnight.astimezone(dt.UTC) - dt.timedelta(minutes=1))
                continue
            if local.hour in self.hours and local.minute in self.minutes:
                found.append(local)
        return found


def _wall_to_instant(wall: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """A wall time that does not exist moves minute by minute to the first one that does."""
    while wall.replace(tzinfo=zone).astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None) != wall:
        wall += dt.timedelta(minutes=1)
    return wall.replace(tzinfo=zone, fold=0)


def _field(rng: random.Random, low: int, high: int, names: list[str] | None = None) -> str:
    kind = rng.random()
    if kind < 0.3:
        return "*"
    if kind < 0.45:
        return f"*/{rng.randint(2, max(2, (high - low) // 2))}"
    if kind < 0.6:
        first = rng.randint(low, high)
        return f"{first}-{rng.randint(first, high)}"
    if kind < 0.75:
        return ",".join(str(v) for v in sorted(rng.sample(range(low, high + 1), 3)))
    if kind < 0.85 and names:
        return names[rng.randint(0, len(names) - 1)]
    if kind < 0.9:
        first = rng.randint(low, high)
        return f"{first}-{rng.randint(first, high)}/{rng.randint(2, 3)}"
    return str(rng.randint(low, high))


def _cases(count: int) -> list[tuple[str, str, dt.datetime]]:
    rng = random.Random(20261123)
    cases = []
    for _ in range(count):
        expression = " ".join(
            [
                _field(rng, 0, 59),
                _field(rng, 0, 23),
                _field(rng, 1, 28),
                _field(rng, 1, 12, MONTHS),
                _field(rng, 0, 6, DAYS),
            ]
        )
        zone = rng.choice(ZONES)
        # Starts a little before the 2026 DST changes of both hemispheres, and at random.
        start = rng.choice(
            [
                dt.datetime(2026, 3, 7, 20, tzinfo=dt.UTC),
                dt.datetime(2026, 3, 28, 20, tzinfo=dt.UTC),
                dt.datetime(2026, 4, 4, 10, tzinfo=dt.UTC),
                dt.datetime(2026, 9, 26, 10, tzinfo=dt.UTC),
                dt.datetime(2026, 10, 24, 20, tzinfo=dt.UTC),
                dt.datetime(2026, 10, 31, 20, tzinfo=dt.UTC),
                dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=rng.randint(0, 525600)),
            ]
        )
        cases.append((expression, zone, start))
    return cases


HAND_PICKED = [
    ("30 2 * * *", "America/New_York", dt.datetime(2026, 3, 7, 12, tzinfo=dt.UTC)),
    ("30 1 * * *", "America/New_York", dt.datetime(2026, 10, 31, 12, tzinfo=dt.UTC)),
    ("*/15 2 * * *", "America/New_York", dt.datetime(2026, 3, 7, 12, tzinfo=dt.UTC)),
    ("0 * * * *", "Europe/London", dt.datetime(2026, 10, 24, 12, tzinfo=dt.UTC)),
    ("0 0 13 * fri", "UTC", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
    ("0 0 */2 * mon", "UTC", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
    ("15 10 * * 7", "Asia/Kolkata", dt.datetime(2026, 5, 1, tzinfo=dt.UTC)),
    ("45 2 * * sun", "Pacific/Chatham", dt.datetime(2026, 9, 20, tzinfo=dt.UTC)),
]


@pytest.mark.parametrize(("expression", "zone_name", "start"), HAND_PICKED + _cases(150))
def test_next_slots_match_the_reference(expression: str, zone_name: str, start: dt.datetime) -> None:
    zone = ZoneInfo(zone_name)
    schedule = build_schedule(cron(expression, tz=zone_name), zone)
    assert isinstance(schedule, CronSchedule)
    ours, after = [], start
    for _ in range(12):
        slot = schedule.next_slot(after)
        assert slot is not None
        ours.append(slot)
        after = slot
    expected = Reference(expression).following(start, zone, 12)
    assert [s.isoformat() for s in ours] == [s.isoformat() for s in expected]
