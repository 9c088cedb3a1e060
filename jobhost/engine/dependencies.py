"""`after=`: which parent slot a child's slot waits for, whether it has succeeded, and the
child slots held until it has.

"The same slot" across two schedules means the newest parent slot not later
than the child's slot: a 03:00 export `after` a 02:30 build waits for that
night's 02:30 build; an hourly job after a daily one waits for today's run.
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import TYPE_CHECKING

from jobhost.definition.spec import JobSpec
from jobhost.engine.attempt import Attempt, Parked
from jobhost.outcomes import Outcome, RunStatus
from jobhost.store import StateStore

if TYPE_CHECKING:
    from jobhost.engine.backlog import Backlog
    from jobhost.engine.leases import Leases
    from jobhost.engine.recorder import Recorder, StoreCalls


def parent_slots(spec: JobSpec, slot: dt.datetime, jobs: dict[str, JobSpec]) -> list[tuple[str, dt.datetime]]:
    """Each parent of `spec` with the slot of it that `slot` waits for (parents with none are left out)."""
    found = []
    for parent in spec.after:
        parent_spec = jobs.get(parent)
        parent_slot = parent_spec.schedule.latest_slot(slot) if parent_spec else None
        if parent_slot is not None:
            found.append((parent, parent_slot))
    return found


def unmet(
    spec: JobSpec, slot: dt.datetime, jobs: dict[str, JobSpec], store: StateStore
) -> list[tuple[str, dt.datetime]]:
    """The parent slots that have not succeeded yet."""
    return [
        (parent, parent_slot)
        for parent, parent_slot in parent_slots(spec, slot, jobs)
        if parent_slot.timestamp() not in store.succeeded_slots(parent, parent_slot, parent_slot)
    ]


def describe(missing: list[tuple[str, dt.datetime]]) -> str:
    return ", ".join(f"{parent} (slot {parent_slot.isoformat()})" for parent, parent_slot in missing)


class Dependencies:
    """Child slots held by `after=` until their parents' slots succeed, or blocked for good.

    They wait in the backlog (`Parked.PARENTS`). A parent's attempt ending here settles
    them at once (`parent_ended`); those whose parents run on other hosts are looked at
    again every lease / 3 (`look_again`). Either way, what is released comes back to the
    caller, to be admitted as a run of its own.
    """

    def __init__(
        self,
        jobs: dict[str, JobSpec],
        call: StoreCalls,
        recorder: Recorder,
        leases: Leases,
        backlog: Backlog,
    ):
        self.jobs = jobs
        self.call = call
        self.store = recorder.store
        self.recorder = recorder
        self.leases = leases
        self.backlog = backlog

    def hold(self, attempt: Attempt, spec: JobSpec) -> bool:
        """Whether `attempt` must wait for its parents (it is then held or recorded blocked)."""
        missing = self.call(lambda: unmet(spec, attempt.slot, self.jobs, self.store), None)
        if missing is None:  # cannot tell now: held, and looked at again each lease / 3
            self.backlog.park(attempt, Parked.PARENTS)
            return True
        if not missing:
            return False
        failed = self._finally_failed(missing)
        if failed is not None:
            self.recorder.unstarted(attempt, RunStatus.WAITING, f"blocked: {failed}", blocked=True)
        elif self.recorder.waits(attempt, f"waiting for {describe(missing)} to succeed"):
            self.backlog.park(attempt, Parked.PARENTS)
        return True

    def _finally_failed(self, missing: list[tuple[str, dt.datetime]]) -> str | None:
        """Which parent slot has ended for good without success (no retry pending), in words."""
        pending = {(r.job, r.slot.timestamp()) for r in self.call(self.store.pending_retries, [])}
        for parent, parent_slot in missing:
            status = self.call(partial(self.store.final_status, parent, parent_slot), None)
            if status is None or (parent, parent_slot.timestamp()) in pending:
                continue
            # An attempt still going may succeed yet (the failure may be a run by hand's).
            going = self.call(partial(self.store.running_runs, parent), [])
            if not any(r.slot.timestamp() == parent_slot.timestamp() for r in going):
                return f"{parent} {status} for slot {parent_slot.isoformat()}"
        return None

    def parent_ended(self, parent: Attempt, outcome: Outcome, *, final: bool) -> list[Attempt]:
        """After a parent's attempt: the children it unblocked (to admit), and those it blocked
        reported. A run by hand that fails is no verdict on the slot (`final` is False)."""
        released = []
        for attempt in self.backlog.waiting_on_parents():
            spec = self.jobs[attempt.job]
            if parent.job not in spec.after:
                continue
            missing = self.call(partial(unmet, spec, attempt.slot, self.jobs, self.store), None)
            if missing is None:  # cannot tell now: looked at again each lease / 3
                continue
            if not missing:
                released.append(self._release(attempt))
            elif final and (parent.job, parent.slot) in missing and outcome.status != RunStatus.SUCCEEDED:
                reason = f"blocked: {parent.job} {outcome.status} for slot {parent.slot.isoformat()} ({outcome.reason})"
                self._block(attempt, reason)
        return released

    def look_again(self) -> list[Attempt]:
        """Child slots whose parents run on other hosts: release or block them as those end."""
        released = []
        for attempt in self.backlog.waiting_on_parents():
            spec = self.jobs[attempt.job]
            missing = self.call(partial(unmet, spec, attempt.slot, self.jobs, self.store), None)
            if missing == []:
                released.append(self._release(attempt))
            elif missing and (failed := self._finally_failed(missing)) is not None:
                self._block(attempt, f"blocked: {failed}")
        return released

    def unblocked(self, now: dt.datetime, parent: str | None = None) -> dict[str, list[dt.datetime]]:
        """Child slots blocked by a parent that had failed for good, whose parents have all succeeded
        since (a person ran the parent's slot again, here or on any host): owed a run now, by child job.
        Only the children of `parent`, if given; only slots within each child's catch-up window."""
        owed: dict[str, list[dt.datetime]] = {}
        for spec in self.jobs.values():
            if not spec.after or (parent is not None and parent not in spec.after):
                continue
            since = now - dt.timedelta(seconds=spec.catchup_window)
            for slot in self.call(partial(self.store.blocked_slots, spec.name, since), []):
                if self.call(partial(unmet, spec, slot, self.jobs, self.store), None) == []:
                    owed.setdefault(spec.name, []).append(slot)
        return owed

    def _release(self, attempt: Attempt) -> Attempt:
        """The parents succeeded: the waiting record is closed, and the slot goes on under the
        same claim as a run of its own."""
        self.backlog.unpark(attempt)
        self.recorder.stops_waiting(attempt, "released: the jobs it comes after succeeded")
        fresh = attempt.reissue()
        if (token := self.leases.let_go(attempt)) is not None:
            self.leases.hold(fresh, token)
        return fresh

    def _block(self, attempt: Attempt, reason: str) -> None:
        self.backlog.unpark(attempt)
        self.recorder.blocked(attempt, reason)
