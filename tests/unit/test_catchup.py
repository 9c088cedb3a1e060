"""Catch-up after downtime, on an injected clock: which slots run and which are recorded missed."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import schedule as schedule_lib

from jobhost.definition.schedules import build_schedule
from jobhost.engine.catchup import MAX_RECORDED, plan_catchup

UTC = ZoneInfo("UTC")
EVERY_10_MIN = build_schedule(schedule_lib.Scheduler().every(10).minutes, UTC)
LAST = dt.datetime(2026, 11, 23, 6, 0, tzinfo=dt.UTC)  # the last slot that ran
NOW = LAST + dt.timedelta(hours=3, minutes=5)  # 3 hours of downtime
WEEK = 7 * 86400.0
DOWN = [LAST + dt.timedelta(minutes=10 * k) for k in range(1, 19)]  # 06:10 ... 09:00


def test_latest_runs_one_slot_and_records_the_rest_missed() -> None:
    plan = plan_catchup(EVERY_10_MIN, LAST, NOW, "latest", WEEK)
    assert plan.run == [DOWN[-1]]
    assert [slot for slot, _ in plan.missed] == DOWN[:-1]
    assert all("superseded" in reason for _, reason in plan.missed)


def test_all_runs_every_missed_slot_in_order() -> None:
    plan = plan_catchup(EVERY_10_MIN, LAST, NOW, "all", WEEK)
    assert plan.run == DOWN and plan.missed == []


def test_none_records_every_slot_missed_and_runs_nothing() -> None:
    plan = plan_catchup(EVERY_10_MIN, LAST, NOW, "none", WEEK)
    assert plan.run == [] and [slot for slot, _ in plan.missed] == DOWN


def test_slots_past_the_window_are_missed_whatever_the_policy() -> None:
    plan = plan_catchup(EVERY_10_MIN, LAST, NOW, "all", window=3600)
    assert plan.run == [s for s in DOWN if s >= NOW - dt.timedelta(hours=1)]
    old = [slot for slot, reason in plan.missed if "catch-up window" in reason]
    assert old == [s for s in DOWN if s < NOW - dt.timedelta(hours=1)]


def test_a_year_of_downtime_is_bounded() -> None:
    plan = plan_catchup(EVERY_10_MIN, LAST - dt.timedelta(days=365), NOW, "latest", WEEK)
    assert plan.run == [DOWN[-1]]
    late = [reason for _, reason in plan.missed if "catch-up window" in reason]
    assert len(late) == MAX_RECORDED + 1 and "not recorded one by one" in late[-1]
    assert len(plan.missed) < 3 * MAX_RECORDED


def test_nothing_to_do_when_nothing_was_missed() -> None:
    plan = plan_catchup(EVERY_10_MIN, DOWN[-1], NOW, "latest", WEEK)
    assert plan.run == [] and plan.missed == []


def test_a_daily_job_across_a_dst_change_catches_up_its_real_slots() -> None:
    london = ZoneInfo("Europe/London")
    daily = build_schedule(schedule_lib.Scheduler().every().day.at("01:30"), london)
    last = dt.datetime(2026, 3, 27, 1, 30, tzinfo=london)
    now = dt.datetime(2026, 3, 30, 12, 0, tzinfo=london)
    plan = plan_catchup(daily, last, now, "all", WEEK)
    assert [s.isoformat() for s in plan.run] == [
        "2026-03-28T01:30:00+00:00",
        "2026-03-29T02:00:00+01:00",  # 01:30 does not exist that night: the end of the gap
        "2026-03-30T01:30:00+01:00",
    ]
