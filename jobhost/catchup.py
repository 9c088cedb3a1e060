"""Which of a job's past slots to run and which to record as missed: a pure function.

Used when the host starts (slots missed while it was down) and when the loop
wakes late (slots that passed while it was busy or suspended).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from jobhost.definition.durations import format_duration
from jobhost.definition.schedules import Schedule

MAX_RECORDED = 1000  # missed slots recorded one by one, per job and reason; beyond that, one summary


@dataclass
class Plan:
    """What to do with the slots between a job's last settled slot and now."""

    run: list[dt.datetime] = field(default_factory=list)
    missed: list[tuple[dt.datetime, str]] = field(default_factory=list)

    def miss(self, slots: list[dt.datetime], reason: str, more_until: dt.datetime | None = None) -> None:
        self.missed.extend((slot, reason) for slot in slots[:MAX_RECORDED])
        if len(slots) > MAX_RECORDED or more_until is not None:
            last = more_until or slots[-1]
            self.missed.append((last, f"{reason}; so were all slots up to this one (not recorded one by one)"))


def plan_catchup(schedule: Schedule, after: dt.datetime, now: dt.datetime, policy: str, window: float) -> Plan:
    """Slots strictly after `after` and at or before `now`, under `policy` ("latest", "all", "none").

    Slots more than `window` seconds before `now` are never run, only recorded as missed.
    """
    plan = Plan()
    horizon = now.astimezone(dt.UTC) - dt.timedelta(seconds=window)
    old: list[dt.datetime] = []
    slot = schedule.next_slot(after)
    while slot is not None and slot < horizon and len(old) <= MAX_RECORDED:
        old.append(slot)
        slot = schedule.next_slot(slot)
    if slot is not None and slot < horizon:  # a long outage: jump to the window
        plan.miss(old[:MAX_RECORDED], _late(window), more_until=schedule.latest_slot(horizon))
        slot = schedule.next_slot(horizon.astimezone(dt.UTC) - dt.timedelta(microseconds=1))
    elif old:
        plan.miss(old, _late(window))
    due: list[dt.datetime] = []
    while slot is not None and slot <= now:
        due.append(slot)
        slot = schedule.next_slot(slot)
    if policy == "all":
        plan.run = due
    elif policy == "latest" and due:
        plan.run = [due[-1]]
        plan.miss(due[:-1], f"superseded: catch-up ran the latest slot, {due[-1].isoformat()}")
    elif due:
        plan.miss(due, 'missed, and the job has catchup="none"')
    return plan


def _late(window: float) -> str:
    return f"more than {format_duration(window)} late, past the catch-up window; not run"
