"""What is due at an instant: each due job once, at its latest slot, then rescheduled."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from jobhost.definition.registry import Registry
from jobhost.definition.schedules import build_schedule
from jobhost.engine.slots import Due, SlotQueue

UTC = ZoneInfo("UTC")
every = Registry(default_zone=UTC).every


def at(hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(2026, 1, 1, hour, minute, second, tzinfo=UTC)


def queue(now: dt.datetime) -> SlotQueue:
    schedules = {
        "ten": build_schedule(every(10).minutes, UTC),
        "hourly": build_schedule(every().hour, UTC),
        "daily": build_schedule(every().day.at("06:00"), UTC),
    }
    return SlotQueue(schedules, now)


def test_next_due_is_the_earliest_next_slot():
    slots = queue(at(0, 5))
    assert len(slots) == 3
    assert slots.next_due() == at(0, 10)


def test_nothing_is_due_before_the_first_slot():
    slots = queue(at(0, 5))
    assert slots.pop_due(at(0, 9, 59)) == []
    assert slots.next_due() == at(0, 10)


def test_a_due_job_is_popped_once_and_rescheduled_strictly_after_now():
    slots = queue(at(0, 5))
    assert slots.pop_due(at(0, 10)) == [Due("ten", at(0, 10), at(0, 10))]
    assert slots.pop_due(at(0, 10)) == []
    assert slots.next_due() == at(0, 20)


def test_several_passed_slots_give_the_latest_and_the_first():
    slots = queue(at(0, 5))
    assert slots.pop_due(at(0, 45)) == [Due("ten", at(0, 40), at(0, 10))]
    assert slots.next_due() == at(0, 50)


def test_slots_to_come_are_popped_one_at_a_time_however_many_the_lead_covers():
    slots = queue(at(0, 5))  # a lead of 35 minutes covers 00:10, 00:20, 00:30 of "ten"
    assert slots.pop_next(at(0, 40)) == [Due("ten", at(0, 10), at(0, 10))]
    assert slots.next_due() == at(0, 20)  # the next, still queued: its own turn, not a missed one
    assert slots.pop_next(at(0, 40)) == [Due("ten", at(0, 20), at(0, 20))]
    assert slots.pop_due(at(0, 30)) == [Due("ten", at(0, 30), at(0, 30))]


def test_only_due_jobs_are_popped_when_several_are_due():
    slots = queue(at(0, 5))
    due = slots.pop_due(at(1, 0, 30))
    assert {d.name: (d.slot, d.first) for d in due} == {
        "ten": (at(1, 0), at(0, 10)),
        "hourly": (at(1, 0), at(1, 0)),
    }
    assert slots.next_due() == at(1, 10)
    assert len(slots) == 3


def test_a_schedule_that_ends_leaves_the_queue():
    ends = dt.datetime(2100, 1, 1)  # schedule reads a naive until() on the machine's clock
    end = ends.astimezone()
    last = SlotQueue({"last": build_schedule(every().minute.until(ends), UTC)}, end - dt.timedelta(seconds=30))
    assert last.next_due() == end
    assert [d.slot for d in last.pop_due(end + dt.timedelta(hours=1))] == [end]
    assert len(last) == 0
    assert last.next_due() is None


class Counting:
    """A schedule that counts how often the queue asks it for slots."""

    def __init__(self, schedule):
        self.schedule, self.zone, self.calls = schedule, schedule.zone, 0

    def next_slot(self, after):
        self.calls += 1
        return self.schedule.next_slot(after)

    def latest_slot(self, at_or_before):
        self.calls += 1
        return self.schedule.latest_slot(at_or_before)


def test_with_ten_thousand_jobs_a_pop_returns_and_touches_only_the_due_one():
    noon = build_schedule(every().day.at("12:00"), UTC)
    schedules = {f"job{i:05}": Counting(noon) for i in range(9999)}
    schedules["early"] = Counting(build_schedule(every().day.at("06:00"), UTC))
    slots = SlotQueue(schedules, at(0))
    for schedule in schedules.values():
        schedule.calls = 0

    assert slots.pop_due(at(6)) == [Due("early", at(6), at(6))]
    assert slots.next_due() == at(12)
    assert [name for name, schedule in schedules.items() if schedule.calls] == ["early"]
    assert len(slots) == 10_000
