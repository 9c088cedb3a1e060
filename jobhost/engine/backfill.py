"""Backfill: run the slots of a past range that have not succeeded, in order, in the foreground.

Each slot goes through the normal runner (isolation, timeout, logs) with the
job's retries. Slots that already succeeded are skipped, so an interrupted
backfill started again runs no slot twice. Each attempt is claimed like the
loop's, after any attempt made before, so no host runs it at the same time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

from jobhost.definition.spec import JobSpec
from jobhost.engine.foreground import ForegroundRun
from jobhost.outcomes import Outcome, RunStatus

Report = Callable[[int, int, dt.datetime, Outcome], None]


def backfill(
    host: ForegroundRun, spec: JobSpec, slots: Iterable[dt.datetime], total: int, report: Report, requested_by: str = ""
) -> RunStatus:
    """Run `slots` (`total` of them) in order; SUCCEEDED if all did, FAILED if any did not,
    INTERRUPTED on a signal. Each run is kept as asked for by `requested_by`."""
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
            outcome = host.run(
                spec, slot, attempt, retry=True, claim=True, first_attempt=first, requested_by=requested_by
            )
            if host.stopping:
                report(index, total, slot, outcome)
                return RunStatus.INTERRUPTED
            if host.retry_at is None:  # succeeded, or no attempt left
                break
            if not host.wait(max(0.0, (host.retry_at - host.clock()).total_seconds())):
                return RunStatus.INTERRUPTED
            attempt += 1
        report(index, total, slot, outcome)
        if outcome.status != RunStatus.SUCCEEDED:
            worst = RunStatus.FAILED
    return worst
