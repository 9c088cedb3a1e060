"""Admission: what becomes of a slot's attempt once it is due, before any worker is involved.

The attempt is claimed first; a host that loses the claim does nothing. Then, in this
order: a paused job's slot is skipped; a child slot waits for its parents (after=); a
slot whose job is still running here or on another host is skipped, queued behind it or
waits, by the job's `overlap`; anything else is ready for a worker. A slot due within
the lead may be prepared: decided on now, its run forked, its job called at the instant.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING

from jobhost.config import HostConfig
from jobhost.context import RunContext
from jobhost.engine.attempt import Attempt, Parked
from jobhost.engine.recovery import KeptRuns
from jobhost.engine.retries import Retries, retry_after_takeover
from jobhost.outcomes import RunStatus
from jobhost.store import RunRecord
from jobhost.store.model import EVERY_JOB, LEASE_EXPIRED, Pause, PendingRetry, TakenOver

if TYPE_CHECKING:
    from jobhost.definition.spec import JobSpec
    from jobhost.engine.backlog import Backlog
    from jobhost.engine.dependencies import Dependencies
    from jobhost.engine.leases import Leases
    from jobhost.engine.recorder import Recorder, StoreCalls
    from jobhost.runs.runner import Runner


def is_paused(job: str, pauses: Mapping[str, Pause], now: dt.datetime) -> bool:
    """Whether `job` is paused at `now`, by its own pause or a freeze of every job, among what
    `pauses()` gave: a pause whose end has come no longer holds, though the heartbeat that records
    its end may be seconds away. Its skipped slots say "paused" either way: the one word releases
    before `runs.paused` know a paused skip by (store/sql.py)."""
    return any(
        (pause := pauses.get(name)) is not None and (pause.until is None or pause.until > now)
        for name in (job, EVERY_JOB)
    )


class PausedJobs:
    """The paused jobs, read at most once per phase of the loop: a thousand slots due at once cost one query."""

    def __init__(self, call: StoreCalls, recorder: Recorder):
        self.call = call
        self.store = recorder.store
        self.clock = recorder.clock
        self._now: dict[str, Pause] | None = None

    def __contains__(self, job: str) -> bool:
        if self._now is None:
            self._now = self.call(self.store.pauses, {})
        return is_paused(job, self._now, self.clock())

    def forget(self) -> None:
        """Read them again at the next question (a person may have paused or resumed one)."""
        self._now = None


class Admission:
    """Decides, for each attempt due, whether it is skipped, waits, queues behind, or is ready."""

    def __init__(
        self,
        jobs: dict[str, JobSpec],
        config: HostConfig,
        call: StoreCalls,
        recorder: Recorder,
        leases: Leases,
        backlog: Backlog,
        runner: Runner,
        dependencies: Dependencies,
        retries: Retries,
    ):
        self.jobs = jobs
        self.config = config
        self.call = call
        self.store = recorder.store
        self.recorder = recorder
        self.leases = leases
        self.backlog = backlog
        self.runner = runner
        self.dependencies = dependencies
        self.retries = retries
        self.paused = PausedJobs(call, recorder)
        self.kept = KeptRuns()  # runs of this host's name going on under their keepers after a restart

    def dispatch(
        self,
        spec: JobSpec,
        slot: dt.datetime,
        number: int = 1,
        *,
        attempt: Attempt | None = None,
        release: bool = False,
    ) -> bool:
        """Claim the slot's attempt and decide what becomes of it; a host that loses the claim does nothing
        (False). With `release`, the slot is still to come: its run is prepared now and starts at the instant."""
        attempt = attempt or Attempt.new(spec, slot, number)
        if not self.leases.claim(attempt):
            return False
        if release and spec.isolation == "process":  # a thread has no process to wait in
            attempt.release_at = slot
        if spec.name in self.paused:
            self.recorder.unstarted(attempt, RunStatus.SKIPPED, "paused", paused=True)
            return True
        if spec.after and self.dependencies.hold(attempt, spec):
            return True
        self._overlap(spec, attempt)
        return True

    def admit(self, attempt: Attempt) -> bool:
        """`dispatch` for an attempt made already (released by its parents, caught up, taken over)."""
        return self.dispatch(self.jobs[attempt.job], attempt.slot, attempt=attempt)

    def _overlap(self, spec: JobSpec, attempt: Attempt) -> None:
        """A run of the job may be going: skip, queue behind it, or wait, by `overlap`."""
        # A run prepared for a slot still to come is not going yet: what is due now runs after it.
        in_flight = self.runner.in_flight(spec.name) + self.backlog.ready_of(spec.name)
        if self.runner.prepared(spec.name) and not in_flight and spec.overlap != "allow":
            self.backlog.park(attempt, Parked.BEHIND)
            return
        if not in_flight and spec.overlap != "allow" and (remote := self._running_elsewhere(spec)) is not None:
            if spec.overlap == "skip" or self.backlog.is_behind_remote(spec.name):
                self.recorder.unstarted(
                    attempt,
                    RunStatus.SKIPPED,
                    f"the previous run {remote.run_id} was still going on host {remote.host}",
                    collided_with=remote.run_id,
                )
            else:
                self.backlog.park(attempt, Parked.BEHIND_REMOTE)
            return
        if in_flight and spec.overlap == "skip":
            other_id = in_flight[0]
            self.recorder.unstarted(
                attempt, RunStatus.SKIPPED, f"the previous run {other_id} was still going", collided_with=other_id
            )
            return
        if in_flight and spec.overlap == "queue":
            if queued := self.backlog.behind(spec.name):  # one waiting run is enough: a slow job must not pile up
                self.recorder.unstarted(
                    attempt,
                    RunStatus.SKIPPED,
                    f"slot {queued[0].slot.isoformat()} is already queued behind the run still going",
                )
            else:
                self.backlog.park(attempt, Parked.BEHIND)
            return
        self.backlog.park(attempt, Parked.READY)

    def preparable(self, spec: JobSpec) -> bool:
        """Whether a slot due within the lead can be decided on now: a worker is free, and no
        run of the job is going whose end before the instant could change what happens."""
        if spec.isolation != "process" or len(self.runner.active) + self.backlog.ready_count >= self.config.max_workers:
            return False
        if spec.after:  # its parents' outcome may come before the instant
            return False
        if self.backlog.behind(spec.name):
            return False
        going = self.runner.going(spec.name) or self.backlog.queued_for(spec.name)
        if going and spec.overlap != "allow":  # a run due now, even one not started yet
            return False
        # On a shared store, another host's run of the job is looked at, at the instant.
        return spec.overlap == "allow" or not self.leases.shared

    def retry(self, retry: PendingRetry) -> None:
        """A retry has come due: claimed like any attempt, then run after the job's run going on, if any."""
        spec = self.jobs.get(retry.job)
        if spec is None:  # the job is gone from jobs/
            self.call(lambda: self.store.drop_retry(retry.job, retry.slot), None)
            return
        attempt = Attempt.new(spec, retry.slot, retry.attempt)
        if not self.leases.claim(attempt):  # another host made it, or the store is out of reach
            if not self.call.up:  # looked at again once it is back
                self.retries.forget(retry)
            return
        self.backlog.park(attempt, Parked.BEHIND if self.runner.going(spec.name) else Parked.READY)

    def took_over(self, taken: TakenOver, now: dt.datetime) -> None:
        """A claim whose host stopped renewing it (or this host's own, at start) is now this host's."""
        spec = self.jobs[taken.job]
        ahead = taken.slot > now  # prepared there, but its instant has not come: it runs here, then
        if not taken.abandoned:  # claimed but never started there: dispatch it here, as a new run
            attempt = Attempt.new(spec, taken.slot, taken.attempt)
            self.leases.hold(attempt, taken.token)
            self.dispatch(spec, attempt.slot, attempt=attempt, release=ahead)
            return
        attempt = Attempt(RunContext(taken.job, taken.run_id, taken.slot.astimezone(spec.schedule.zone), taken.attempt))
        self.leases.hold(attempt, taken.token)
        reason = LEASE_EXPIRED.format(previous=taken.previous_host, taker=self.config.hostname)
        asked = [r for r in self.call(self.store.cancel_requests, []) if r.run_id == taken.run_id]
        if asked:  # its host died before it could cancel it: cancelled, as the person asked, and not run again
            self.recorder.settle_cancelled(attempt, f"{asked[0].outcome_reason()} ({reason})")
            self.call(lambda: self.store.cancels_done([taken.run_id], now), None)
            return
        retry = retry_after_takeover(spec, taken.attempt, attempt.slot, now)
        self.recorder.abandoned(attempt, reason, now, retry, previous_host=taken.previous_host)
        if retry is not None:
            self.retries.add(retry)
        elif ahead:
            self.dispatch(spec, attempt.slot, taken.attempt + 1, release=True)
        elif spec.catchup == "all" or (spec.catchup == "latest" and _still_latest(spec, attempt.slot, now)):
            self.dispatch(spec, attempt.slot, taken.attempt + 1)

    def _running_elsewhere(self, spec: JobSpec) -> RunRecord | None:
        """A run of the job going on another host, or kept on after a restart (for overlap), if any;
        alone on its store (SQLite) with no kept run, a host has nobody to ask about, and saves the
        query on every slot."""
        kept = self.kept.of(spec.name)
        if not self.leases.shared and not kept:
            return None
        runs = self.call(lambda: self.store.running_runs(spec.name), None)
        if runs is None:
            return None
        self.kept.ended(kept - {r.run_id for r in runs})
        return next((r for r in runs if r.host != self.config.hostname or r.run_id in kept), None)

    def look_behind_remote(self) -> None:
        """overlap="queue" slots behind another host's run: start those whose run has ended."""
        for attempt in self.backlog.behind_remote():
            if self._running_elsewhere(self.jobs[attempt.job]) is None and self.call.up:
                self.backlog.unpark(attempt)
                self.backlog.park(attempt, Parked.READY)


def _still_latest(spec: JobSpec, slot: dt.datetime, now: dt.datetime) -> bool:
    following = spec.schedule.next_slot(slot.astimezone(dt.UTC))
    return following is None or following > now
