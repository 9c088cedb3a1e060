"""Which jobs are due, without looking at the jobs that are not.

A heap keyed by each job's next slot: a wakeup pops only the due entries, so
its cost grows with the number of due runs, not with the number of jobs.
Pure: the caller passes `now`.
"""

from __future__ import annotations

import datetime as dt
import heapq
from dataclasses import dataclass

from jobhost.definition.schedules import Schedule


@dataclass(frozen=True)
class Due:
    """A job whose slot has come: `slot` is the latest one at or before now,
    `first` the earliest one that came due since the job was last popped."""

    name: str
    slot: dt.datetime
    first: dt.datetime


class SlotQueue:
    """The next slot of every job, earliest first."""

    def __init__(self, schedules: dict[str, Schedule], now: dt.datetime):
        self._schedules = schedules
        self._heap: list[tuple[float, str, dt.datetime]] = []
        for name, schedule in schedules.items():
            slot = schedule.next_slot(now)
            if slot is not None:
                self._heap.append((slot.timestamp(), name, slot))
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def next_due(self) -> dt.datetime | None:
        """The earliest upcoming slot of any job, or None when no job has one."""
        return self._heap[0][2] if self._heap else None

    def pop_due(self, now: dt.datetime) -> list[Due]:
        """Every job due at `now`, each once, and reschedule them after `now`."""
        due: list[Due] = []
        stamp = now.timestamp()
        while self._heap and self._heap[0][0] <= stamp:
            _, name, first = heapq.heappop(self._heap)
            schedule = self._schedules[name]
            latest = schedule.latest_slot(now) or first
            if latest < first:
                latest = first
            due.append(Due(name, latest, first))
            following = schedule.next_slot(latest)
            while following is not None and following <= now:  # guards schedules whose latest_slot lags
                following = schedule.next_slot(following)
            if following is not None:
                heapq.heappush(self._heap, (following.timestamp(), name, following))
        return due

    def pop_next(self, until: dt.datetime) -> list[Due]:
        """Every job whose next slot comes at or before `until`, that slot alone: the slots after it
        stay queued, even those before `until` too. (Slots still to come, to prepare ahead of them;
        `pop_due` would take several as one, as if the loop had woken late past them.)"""
        due: list[Due] = []
        later: list[tuple[float, str, dt.datetime]] = []
        stamp = until.timestamp()
        while self._heap and self._heap[0][0] <= stamp:
            _, name, slot = heapq.heappop(self._heap)
            due.append(Due(name, slot, slot))
            following = self._schedules[name].next_slot(slot)
            if following is not None:
                later.append((following.timestamp(), name, following))
        for entry in later:
            heapq.heappush(self._heap, entry)
        return due


class DueSlots:
    """The slots the loop acts on next: the queue of every job's next slot, and the slots due
    within the lead that could not be prepared, deferred to their instant."""

    def __init__(self, schedules: dict[str, Schedule], now: dt.datetime, lead: float):
        self.queue = SlotQueue(schedules, now)
        self.lead = dt.timedelta(seconds=lead)
        self._deferred: list[Due] = []

    def due_now(self, now: dt.datetime) -> list[Due]:
        """The slots due by `now`, deferred ones included; those deferred to a later instant wait on."""
        deferred, self._deferred = self._deferred, []
        due: list[Due] = []
        for slot in [*deferred, *self.queue.pop_due(now)]:
            (self._deferred if slot.slot > now else due).append(slot)
        return due

    def due_within(self, now: dt.datetime) -> list[Due]:
        """The slots due within the lead, taken out of the queue: prepared now, or deferred."""
        return self.queue.pop_next(now + self.lead)

    def defer(self, due: Due) -> None:
        """Decide on `due` at its instant, as on any other slot."""
        self._deferred.append(due)

    def next_wakeup(self) -> dt.datetime | None:
        """When the loop must be awake for a slot: a deferred one's instant, or a lead before the next."""
        upcoming = [due.slot for due in self._deferred]
        if (next_slot := self.queue.next_due()) is not None:  # woken a lead early, to prepare its run
            upcoming.append(next_slot - self.lead)
        return min(upcoming, default=None)
