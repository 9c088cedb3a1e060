"""Slots of every(...) and cron(...) schedules: alignment, DST policy, refusals.

Slots are pure functions of the schedule and an instant, so every test passes
its instants explicitly.
"""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from jobhost.definition.registry import Registry
from jobhost.definition.schedules import build_schedule, cron
from jobhost.errors import ScheduleError

UTC = ZoneInfo("UTC")
LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
every = Registry(default_zone=UTC).every


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def following(schedule, after: dt.datetime, count: int) -> list[dt.datetime]:
    """`count` slots, each asked for with next_slot(previous)."""
    slots = []
    for _ in range(count):
        after = schedule.next_slot(after)
        slots.append(after)
    return slots


def iso(slots: list[dt.datetime]) -> list[str]:
    return [slot.isoformat() for slot in slots]


# -- every(...) alignment ------------------------------------------------------


def test_every_ten_minutes_falls_on_round_ten_minutes():
    schedule = build_schedule(every(10).minutes, UTC)
    assert iso(following(schedule, utc(2026, 11, 23, 9, 54, 12), 3)) == [
        "2026-11-23T10:00:00+00:00",
        "2026-11-23T10:10:00+00:00",
        "2026-11-23T10:20:00+00:00",
    ]


def test_every_seven_minutes_falls_on_epoch_multiples_of_420_seconds():
    schedule = build_schedule(every(7).minutes, UTC)
    slots = following(schedule, utc(2026, 11, 23, 10, 0), 3)
    assert iso(slots) == ["2026-11-23T10:03:00+00:00", "2026-11-23T10:10:00+00:00", "2026-11-23T10:17:00+00:00"]
    assert all(slot.timestamp() % 420 == 0 for slot in slots)


@pytest.mark.parametrize("start", [dt.datetime(2026, 3, 29, 0, 30), dt.datetime(2026, 10, 25, 0, 30)])
def test_every_seven_minutes_stays_seven_minutes_apart_across_dst(start):
    schedule = build_schedule(every(7).minutes, LONDON)
    slots = following(schedule, start.replace(tzinfo=LONDON), 40)  # spans the 01:00 UTC change
    offsets = {slot.utcoffset() for slot in slots}
    assert len(offsets) == 2, "the slots should span the DST change"
    gaps = {b.timestamp() - a.timestamp() for a, b in itertools.pairwise(slots)}
    assert gaps == {420.0}
    assert all(slot.timestamp() % 420 == 0 for slot in slots)


def test_hourly_slots_are_elapsed_hours_so_india_gets_the_half_hour():
    schedule = build_schedule(every().hour, ZoneInfo("Asia/Kolkata"))
    assert iso(following(schedule, utc(2026, 1, 1, 10, 5), 2)) == [
        "2026-01-01T16:30:00+05:30",
        "2026-01-01T17:30:00+05:30",
    ]


def test_every_two_days_runs_on_even_day_numbers_since_1970():
    schedule = build_schedule(every(2).days.at("10:00"), UTC)
    slots = following(schedule, utc(2026, 11, 22, 12), 3)
    assert iso(slots) == ["2026-11-23T10:00:00+00:00", "2026-11-25T10:00:00+00:00", "2026-11-27T10:00:00+00:00"]
    assert dt.date(2026, 11, 23).toordinal() - dt.date(1970, 1, 1).toordinal() == 20780


def test_every_two_days_keeps_its_wall_time_across_dst():
    schedule = build_schedule(every(2).days.at("10:00", "Europe/London"), UTC)
    slots = following(schedule, utc(2026, 3, 25), 3)
    assert iso(slots) == [
        "2026-03-26T10:00:00+00:00",
        "2026-03-28T10:00:00+00:00",
        "2026-03-30T10:00:00+01:00",
    ]


def test_every_wednesday_at_a_wall_time():
    schedule = build_schedule(every().wednesday.at("09:00", "Europe/London"), UTC)
    slots = following(schedule, utc(2026, 10, 15), 3)
    assert iso(slots) == [
        "2026-10-21T09:00:00+01:00",
        "2026-10-28T09:00:00+00:00",
        "2026-11-04T09:00:00+00:00",
    ]
    assert {slot.weekday() for slot in slots} == {2}


def test_every_two_weeks_runs_on_mondays_of_even_weeks_since_1969_12_29():
    schedule = build_schedule(every(2).weeks, UTC)
    slots = following(schedule, utc(2026, 11, 1), 3)
    assert iso(slots) == ["2026-11-02T00:00:00+00:00", "2026-11-16T00:00:00+00:00", "2026-11-30T00:00:00+00:00"]
    assert all((slot.date().toordinal() - dt.date(1969, 12, 29).toordinal()) // 7 % 2 == 0 for slot in slots)


@pytest.mark.parametrize(
    ("job", "after", "expected"),
    [
        (
            lambda: every().hour.at(":30"),
            utc(2026, 1, 1, 10, 30),
            ["2026-01-01T11:30:00+00:00", "2026-01-01T12:30:00+00:00"],
        ),
        (
            lambda: every().hours.at("15:20"),
            utc(2026, 1, 1, 10),
            ["2026-01-01T10:15:20+00:00", "2026-01-01T11:15:20+00:00"],
        ),
        (
            lambda: every().minute.at(":15"),
            utc(2026, 1, 1, 10, 30, 15),
            ["2026-01-01T10:31:15+00:00", "2026-01-01T10:32:15+00:00"],
        ),
    ],
)
def test_at_shifts_sub_day_grids(job, after, expected):
    assert iso(following(build_schedule(job(), UTC), after, 2)) == expected


def test_until_ends_the_slots():
    ends = dt.datetime(2100, 1, 1)  # schedule reads a naive until() on the machine's clock
    end = ends.astimezone()
    schedule = build_schedule(every().minute.until(ends), UTC)
    assert schedule.next_slot(end - dt.timedelta(minutes=1)) == end
    assert schedule.next_slot(end) is None
    assert schedule.latest_slot(end + dt.timedelta(days=3)) == end


# -- DST policy for fixed wall times ------------------------------------------------

DST_CASES = [
    # zone, hour, minute, start of the look (UTC), the next three slots
    pytest.param(
        "America/New_York",
        2,
        30,
        utc(2026, 3, 7, 0),
        ["2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"],
        id="new-york-gap",
    ),
    pytest.param(
        "America/New_York",
        1,
        30,
        utc(2026, 10, 31, 0),
        ["2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"],
        id="new-york-repeat",
    ),
    pytest.param(
        "Europe/London",
        1,
        30,
        utc(2026, 3, 28, 0),
        ["2026-03-28T01:30:00+00:00", "2026-03-29T02:00:00+01:00", "2026-03-30T01:30:00+01:00"],
        id="london-gap",
    ),
    pytest.param(
        "Europe/London",
        1,
        30,
        utc(2026, 10, 24, 0),
        ["2026-10-24T01:30:00+01:00", "2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00+00:00"],
        id="london-repeat",
    ),
]


def daily_at(zone: str, hour: int, minute: int):
    return build_schedule(every().day.at(f"{hour:02}:{minute:02}", zone), UTC)


def daily_cron(zone: str, hour: int, minute: int):
    return build_schedule(cron(f"{minute} {hour} * * *", tz=zone), UTC)


@pytest.mark.parametrize("make", [daily_at, daily_cron], ids=["at", "cron"])
@pytest.mark.parametrize(("zone", "hour", "minute", "start", "expected"), DST_CASES)
def test_fixed_wall_time_runs_once_on_dst_days(make, zone, hour, minute, start, expected):
    schedule = make(zone, hour, minute)
    assert iso(following(schedule, start, 3)) == expected
    for slot in expected:  # and latest_slot agrees, from a minute after each slot
        instant = dt.datetime.fromisoformat(slot)
        assert schedule.latest_slot(instant + dt.timedelta(minutes=1)).isoformat() == slot


@pytest.mark.parametrize("local_input", [False, True], ids=["utc-instants", "local-instants"])
@pytest.mark.parametrize(
    ("make", "zone", "night"),
    [
        (lambda: every(10).minutes, NEW_YORK, utc(2026, 11, 1, 4)),
        (lambda: cron("*/20 * * * *"), NEW_YORK, utc(2026, 11, 1, 4)),
        (lambda: every().day.at("01:30"), NEW_YORK, utc(2026, 11, 1, 4)),
        (lambda: cron("30 1 * * *"), NEW_YORK, utc(2026, 11, 1, 4)),
        (lambda: every().day.at("01:30"), LONDON, utc(2026, 10, 24, 23)),
        (lambda: cron("30 1 * * *"), LONDON, utc(2026, 10, 24, 23)),
        (lambda: every().day.at("02:30"), NEW_YORK, utc(2026, 3, 8, 5)),
        (lambda: cron("30 2 * * *"), NEW_YORK, utc(2026, 3, 8, 5)),
    ],
    ids=["interval", "cron-star", "at-ny", "cron-ny", "at-london", "cron-london", "at-gap", "cron-gap"],
)
def test_next_is_strictly_after_and_latest_at_or_before_all_night(make, zone, night, local_input):
    """Throughout a DST night, next_slot(t) > t >= latest_slot(t), with no slot between them.

    Instants are given as UTC, or in the job's own zone (the second pass of a
    repeated hour then has fold=1).
    """
    schedule = build_schedule(make(), zone)
    for step in range(0, 5 * 60, 7):
        instant = night + dt.timedelta(minutes=step)
        given = instant.astimezone(zone) if local_input else instant
        following_slot, latest = schedule.next_slot(given), schedule.latest_slot(given)
        assert following_slot.timestamp() > instant.timestamp(), (
            f"next_slot({given.isoformat()}) = {following_slot.isoformat()}"
        )
        assert latest.timestamp() <= instant.timestamp(), f"latest_slot({given.isoformat()}) = {latest.isoformat()}"
        assert schedule.next_slot(latest).timestamp() == following_slot.timestamp(), (
            f"a slot between {latest} and {following_slot}"
        )


# -- latest_slot on a slot ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "zone"),
    [
        (lambda: every(10).minutes, UTC),
        (lambda: every(7).minutes, LONDON),
        (lambda: every().hour.at(":30"), UTC),
        (lambda: every(2).days.at("10:00"), LONDON),
        (lambda: every().wednesday.at("09:00"), NEW_YORK),
        (lambda: every(2).weeks, UTC),
        (lambda: cron("*/15 * * * *"), UTC),
        (lambda: cron("0 6 * * mon-fri"), NEW_YORK),
        (lambda: cron("30 2 * * *"), NEW_YORK),  # its 2026-03-08 slot is the gap's end, 03:00
    ],
)
def test_latest_slot_of_a_slot_is_that_slot(make, zone):
    schedule = build_schedule(make(), zone)
    for slot in following(schedule, utc(2026, 3, 6), 5):
        assert schedule.latest_slot(slot) == slot
        # Subtract in UTC: arithmetic on a zoned datetime is wall-clock arithmetic,
        # and 03:00 EDT minus 1 µs is a wall time inside the gap.
        just_before = slot.astimezone(dt.UTC) - dt.timedelta(microseconds=1)
        assert schedule.latest_slot(just_before) < slot
        assert schedule.next_slot(slot) > slot


# -- cron against cronsim ----------------------------------------------------------------

CRON_EXPRESSIONS = [
    "*/15 * * * *",
    "0 * * * *",
    "30 2 * * *",
    "30 1 * * *",
    "0 9-17 * * mon-fri",
    "5,35 */3 * * *",
    "10-50/20 1-3 * * *",
    "*/7 0-4 * * *",
    "0 0 1 * *",
    "0 12 * jan,jul *",
    "0 0 13 * fri",  # day of month OR day of week
    "15 10 1-7 * 1",
    "0 6 * * sun",
    "0 3 29 2 *",
    "@daily",
]
CRON_ZONES = ["UTC", "Europe/London", "America/New_York", "Australia/Sydney", "Asia/Kolkata"]
NEAR_TRANSITIONS = [
    utc(2026, 3, 7, 22),  # New York springs forward on 8 March
    utc(2026, 3, 28, 20),  # London on 29 March
    utc(2026, 4, 4, 10),  # Sydney falls back on 5 April
    utc(2026, 10, 3, 10),  # Sydney springs forward on 4 October
    utc(2026, 10, 24, 20),  # London falls back on 25 October
    utc(2026, 10, 31, 22),  # New York on 1 November
]
REFERENCE_TEXT = {"@daily": "0 0 * * *"}


@pytest.mark.parametrize("zone", CRON_ZONES)
@pytest.mark.parametrize("expression", CRON_EXPRESSIONS)
def test_cron_slots_match_cronsim(expression, zone):
    schedule = build_schedule(cron(expression, tz=zone), UTC)
    for start in NEAR_TRANSITIONS:
        local_start = start.astimezone(ZoneInfo(zone))
        reference = CronSim(REFERENCE_TEXT.get(expression, expression), local_start)
        expected = [next(reference).isoformat() for _ in range(50)]
        assert iso(following(schedule, start, 50)) == expected, f"from {local_start.isoformat()}"


def test_cron_one_value_range_with_a_step_is_that_one_value():
    schedule = build_schedule(cron("5-5/2 * * * *"), UTC)
    assert iso(following(schedule, utc(2026, 1, 1, 10), 2)) == [
        "2026-01-01T10:05:00+00:00",
        "2026-01-01T11:05:00+00:00",
    ]


def test_cron_without_tz_uses_the_default_zone():
    schedule = build_schedule(cron("0 6 * * *"), NEW_YORK)
    assert schedule.next_slot(utc(2026, 1, 1)).isoformat() == "2026-01-01T06:00:00-05:00"


# -- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (lambda: every(5).to(10).minutes, ["every(5).to(10)", "random", "write every(5).minutes or a cron(...)"]),
        (lambda: every(10), ["every(10) needs a unit", "every(10).minutes"]),
        (lambda: every(0).minutes, ["every(0)", "at least 1"]),
        (
            lambda: cron("0 0 * * * *"),
            ["has 6 fields", "5 standard ones", "minute hour day-of-month month day-of-week"],
        ),
        (lambda: cron("61 * * * *"), ["cron('61 * * * *')", "Bad minute", "minute 0-59"]),
        (lambda: cron("0 0 30 2 *"), ["cron('0 0 30 2 *')", "day-of-month"]),
        (lambda: cron("0 0 * * *", tz="Mars/Base"), ["unknown time zone 'Mars/Base'", "IANA", "Europe/London"]),
        (lambda: "every day", ["every(...) or cron(...)", "@job(every(10).minutes)"]),
    ],
    ids=["to", "no-unit", "zero", "six-fields", "bad-minute", "feb-30", "unknown-tz", "not-a-schedule"],
)
def test_refused_schedules_say_what_to_write(spec, words):
    with pytest.raises(ScheduleError) as info:
        build_schedule(spec(), UTC)
    for word in words:
        assert word in str(info.value)
