"""The range a backfill covers: its slots, counted without holding them, and its bounds.

The command line checks a range here before anything runs; the run itself is
`jobhost.engine.backfill`.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator

from jobhost.definition.schedules import Schedule

MAX_SLOTS = 10_000  # slots a backfill runs without being told --max-slots
MAX_SLOTS_CEILING = 10_000_000  # the most --max-slots may allow: an every-minute job for 19 years


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
