"""One-off runs: a run a person asked for at a later instant (`run --at`), started once at it.

They are kept in the store (jobhost.operations writes them), so they survive restarts and
reach every host. Each host reads the pending ones at its start, at each tick and when
nudged; at the instant one becomes a run by hand (not retried, whatever pause, overlap and
`after=` say, as `run` is), and the host that takes it from the store as it starts is the
one that runs it: a one-off waiting for a worker is still pending, so a host that dies then
loses nothing. One whose instant passed while no host ran runs late, within the job's
catch-up window; later than that it is recorded missed.
"""

from __future__ import annotations

import datetime as dt
import logging
from functools import partial
from typing import TYPE_CHECKING

from jobhost.context import RunContext
from jobhost.definition.durations import format_duration
from jobhost.engine.attempt import Attempt, Parked
from jobhost.outcomes import RunStatus
from jobhost.store.model import OneOff

if TYPE_CHECKING:
    from jobhost.definition.spec import JobSpec
    from jobhost.engine.backlog import Backlog
    from jobhost.engine.recorder import Recorder, StoreCalls

logger = logging.getLogger("jobhost.host")


class OneOffs:
    """The pending one-off runs of this host's jobs, by instant; and those due, waiting for a worker."""

    def __init__(self, jobs: dict[str, JobSpec], calls: StoreCalls, recorder: Recorder, backlog: Backlog):
        self.jobs = jobs
        self.calls = calls
        self.store = calls.store
        self.recorder = recorder
        self.backlog = backlog
        self._pending: dict[str, OneOff] = {}
        self._queued: set[str] = set()  # due and in the backlog: not taken from the store yet

    def refresh(self) -> None:
        """Read the pending one-offs again (another host, or a person, may have added or cancelled one)."""
        pending = self.calls(self.store.pending_one_offs, None)
        if pending is not None:
            self._pending = {o.run_id: o for o in pending if o.job in self.jobs and o.run_id not in self._queued}

    def next_wakeup(self) -> dt.datetime | None:
        return min((o.at for o in self._pending.values()), default=None)

    def admit_due(self, now: dt.datetime) -> None:
        """Put each one-off whose instant has come in the backlog, ready, as a run by hand; one past the
        job's catch-up window is recorded missed (if this host is the one that takes it)."""
        for one_off in sorted((o for o in self._pending.values() if o.at <= now), key=lambda o: o.at):
            del self._pending[one_off.run_id]
            spec = self.jobs[one_off.job]
            slot = one_off.at.astimezone(spec.schedule.zone)
            context = RunContext(one_off.job, one_off.run_id, slot, 1, one_off.params)
            attempt = Attempt(context, manual=True, requested_by=one_off.requested_by, one_off=True)
            late = (now - one_off.at).total_seconds()
            if late > spec.catchup_window:
                if self.calls(partial(self.store.take_one_off, one_off.run_id), False):
                    window = format_duration(spec.catchup_window)
                    reason = f"the one-off run's instant passed while no host ran; past the {window} catch-up window"
                    self.recorder.unclaimed(attempt, RunStatus.MISSED, reason)
                continue
            attempt.catch_up = late > 1.0  # its instant passed while no host ran: late by design
            self._queued.add(one_off.run_id)
            self.backlog.park(attempt, Parked.READY)

    def take(self, attempt: Attempt) -> bool:
        """As a one-off starts: take it from the store; False if another host has, someone cancelled it,
        or the store failed (it is still pending then, and looked at again at the next tick)."""
        self._queued.discard(attempt.run_id)
        taken = self.calls(lambda: self.store.take_one_off(attempt.run_id), False)
        if not taken:
            logger.info(
                "one-off run %s of %s not started here: another host took it, or it was cancelled",
                attempt.run_id,
                attempt.job,
                extra={"event": "one_off_not_taken", **attempt.context.fields()},
            )
        return bool(taken)

    def leave(self, attempt: Attempt) -> None:
        """The host stops before the one-off started: it stays pending in the store, for the next start."""
        self._queued.discard(attempt.run_id)
