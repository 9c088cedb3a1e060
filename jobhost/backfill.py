"""Backfill: run the slots of a past range that have not succeeded, in order, in the foreground.

Each slot goes through the normal runner (isolation, timeout, logs) with the
job's retries. Slots that already succeeded are skipped, so an interrupted
backfill started again runs no slot twice. Each attempt is claimed like the
loop's, after any attempt made before, so no host runs it at the same time.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from jobhost.definition.schedules import Schedule
from jobhost.definition.spec import JobSpec
from jobhost.outcomes import Outcome, RunStatus

if TYPE_CHECKING:  # the command line reads the bounds here without loading the loop
    from jobhost.host import Host

Report = Callable[[int, int, dt.datetime, Outcome], None]
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


def backfill(host: Host, spec: JobSpec, slots: Iterable[dt.datetime], total: int, report: Report) -> RunStatus:
    """Run `slots` (`total` of them) in order; SUCCEEDED if all did, FAILED if any did not,
    INTERRUPTED on a signal."""
    worst = RunStatus.SUCCEEDED
    for index, slot in enumerate(slots, 1):
        attempt = host.next_attempt(spec, slot)  # after any a loop or an earlier backfill made
        if attempt is None:
            busy = Outcome(RunStatus.SKIPPED, "a host is running this slot now (or the state store is unreachable)")
            report(index, total, slot, busy)
            worst = RunStatus.FAILED
            continue
        first = attempt
        while True:
            outcome = host.run_now(spec, slot, attempt, retry=True, claim=True, first_attempt=first)
            if host.stopping:
                report(index, total, slot, outcome)
                return RunStatus.INTERRUPTED
            if host.retry_at is None:  # succeeded, or no attempt left
                break
            if not host.pause(max(0.0, (host.retry_at - host.clock()).total_seconds())):
                return RunStatus.INTERRUPTED
            attempt += 1
        report(index, total, slot, outcome)
        if outcome.status != RunStatus.SUCCEEDED:
            worst = RunStatus.FAILED
    return worst
