"""Catch-up: which of a job's past slots to run and which to record as missed.

`plan_catchup` decides it, a pure function; `CatchUp` acts on it when the host starts
(slots missed while it was down), when the loop wakes late (slots that passed while it
was busy or suspended), after the store was out of reach, and after a job is resumed.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from jobhost.clock import Clock
from jobhost.definition.durations import format_duration
from jobhost.definition.schedules import Schedule
from jobhost.engine.admission import is_paused
from jobhost.engine.attempt import Attempt, Parked
from jobhost.outcomes import RunStatus
from jobhost.store.model import EVERY_JOB, Hold

if TYPE_CHECKING:
    from jobhost.definition.spec import JobSpec
    from jobhost.engine.admission import Admission
    from jobhost.engine.backlog import Backlog
    from jobhost.engine.recorder import Recorder, StoreCalls
    from jobhost.runs.runner import Runner

logger = logging.getLogger("jobhost.host")

SUPERSEDED = "superseded: catch-up ran the latest slot"
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


def start_plan(
    spec: JobSpec, after: dt.datetime, now: dt.datetime, orphans: list[dt.datetime], hold: Hold | None = None
) -> Plan:
    """What catch-up does for `spec` at a start at `now`: its slots after `after` (its newest settled
    one) by its policy, and the `orphans` before it that never settled (a later slot did): run with
    catchup="all", else given up. A person's `hold` gives up the runs of slots up to its instant.
    What the loop does, and what `plan` says it will do."""
    plan = plan_catchup(spec.schedule, after, now, spec.catchup, spec.catchup_window)
    if orphans and spec.catchup == "all":
        plan.run = orphans + plan.run
    elif orphans:
        why = "superseded: a later slot has run" if spec.catchup == "latest" else 'the job has catchup="none"'
        plan.missed.extend((slot, why) for slot in orphans)
    if hold is not None:
        held = [slot for slot in plan.run if slot <= hold.at]
        plan.run = [slot for slot in plan.run if slot > hold.at]
        if held:  # no slot was run in their place: the ones "superseded" by a held run are held too
            plan.missed = [(s, hold.reason() if r.startswith(SUPERSEDED) else r) for s, r in plan.missed]
        plan.missed.extend((slot, hold.reason()) for slot in held)
    return plan


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
        plan.miss(due[:-1], f"{SUPERSEDED}, {due[-1].isoformat()}")
    elif due:
        plan.miss(due, 'missed, and the job has catchup="none"')
    return plan


def _late(window: float) -> str:
    return f"more than {format_duration(window)} late, past the catch-up window; not run"


class CatchUp:
    """What a job missed while the host was down, the store out of reach, or the job paused:
    slots given up are recorded missed, the others run one after another. A slot another host
    is on, or one settled meanwhile, is left alone."""

    def __init__(
        self,
        jobs: dict[str, JobSpec],
        call: StoreCalls,
        recorder: Recorder,
        backlog: Backlog,
        runner: Runner,
        admission: Admission,
        clock: Clock,
    ):
        self.jobs = jobs
        self.call = call
        self.store = recorder.store
        self.recorder = recorder
        self.backlog = backlog
        self.runner = runner
        self.admission = admission
        self.clock = clock
        self._owed = False  # a catch-up is owed for slots an outage kept from being claimed
        self._owed_since: dt.datetime | None = None
        self._resumes: dict[str, int] | None = None  # how often each job was resumed, at the last look

    def all(self, now: dt.datetime, since: dt.datetime | None = None, holds: dict[str, Hold] | None = None) -> None:
        """Every job seen before: what did it miss while the host was down, or (`since`) while the
        store was out of reach? Slots settled or claimed meanwhile are left alone. `holds`: the runs
        a person held before a deploy, given up instead."""
        settled = self.call(self.store.settled_slots, None)
        for name, spec in self.jobs.items():
            if settled is not None and name in settled:
                after = settled[name] if since is None else min(settled[name], since)
                self.one(spec, after, now, hold=(holds or {}).get(name))

    def one(
        self,
        spec: JobSpec,
        after: dt.datetime,
        now: dt.datetime,
        *,
        after_pause: bool = False,
        hold: Hold | None = None,
    ) -> None:
        """Slots after `after` up to `now`, by the job's policy. `after_pause`: the job was paused, on purpose."""
        # Slots before `after` that never settled (a later slot did): interrupted, paused, ...
        since = now - dt.timedelta(seconds=spec.catchup_window)
        orphans = self.call(lambda: self.store.unsettled_slots(spec.name, since, after), [])
        plan = start_plan(spec, after, now, orphans, hold)
        reasons = dict(plan.missed)
        missed = [(a, reasons[a.slot]) for a in self._next_attempts(spec, [slot for slot, _ in plan.missed])]
        runs = self._next_attempts(spec, plan.run)
        for index, (attempt, reason) in enumerate(missed):
            extra = {"after_pause": True} if after_pause else {}
            self.recorder.unstarted(attempt, RunStatus.MISSED, reason, batch=(index, len(missed)), **extra)
        if is_paused(spec.name, self.call(self.store.pauses, {}), now):
            for attempt in runs:
                self.recorder.unstarted(attempt, RunStatus.SKIPPED, "paused", paused=True)
            return
        self._run(spec, runs)

    def unblocked(self, owed: dict[str, list[dt.datetime]]) -> None:
        """Child slots blocked by a parent that has succeeded since (a person fixed it): run now, each
        as its next attempt, whatever the job's catch-up policy (it is what the person fixed it for)."""
        for name, slots in owed.items():
            runs = self._next_attempts(self.jobs[name], slots)
            for attempt in runs:
                logger.info(
                    "slot %s of %s runs now: the parent slot that blocked it has succeeded",
                    attempt.slot.isoformat(),
                    name,
                    extra={"event": "run_unblocked", **attempt.context.fields()},
                )
            self._run(self.jobs[name], runs)

    def _run(self, spec: JobSpec, runs: list[Attempt]) -> None:
        """Catch-up runs of `spec`: the first dispatched now, the rest behind it, each claimed as it
        starts; the backlog runs after the run going on, not skipped for it."""
        for attempt in runs:
            attempt.catch_up = True
        if runs and (
            spec.overlap == "allow" or not (self.runner.going(spec.name) or self.backlog.queued_for(spec.name))
        ):
            first, *runs = runs
            self.admission.dispatch(spec, first.slot, attempt=first)
        for attempt in runs:
            self.backlog.park(attempt, Parked.BEHIND)

    def _next_attempts(self, spec: JobSpec, slots: list[dt.datetime]) -> list[Attempt]:
        """The attempt after any made of each slot (an abandoned or interrupted slot is run again);
        a slot another host is on, or one that has settled meanwhile, is left out."""
        attempts = []
        for slot in slots:
            state = self.call(partial(self.store.slot_state, spec.name, slot), None)
            if state is not None and not state.held and not state.settled:
                attempts.append(Attempt.new(spec, slot, state.last_attempt + 1))
        return attempts

    # -- after an outage -------------------------------------------------

    def owe(self, since: dt.datetime | None) -> None:
        """The store failed: the slots due from `since` on (None: since each job's last settled slot)
        were claimed by no host, and are caught up once the store works again."""
        if not self._owed:
            self._owed, self._owed_since = True, since
        elif self._owed_since is not None and (since is None or since < self._owed_since):
            self._owed_since = since

    def pay(self, now: dt.datetime) -> None:
        """Catch up what an outage kept from being claimed; owed again if the store fails meanwhile,
        so a store back for a moment only (a disk freed a little) loses no slot."""
        if not self._owed:
            return
        since, self._owed = self._owed_since, False
        misses = self.call.link.misses
        self.all(now, since=since)
        if self.call.link.misses != misses:
            self.owe(since)

    def at_start(self, now: dt.datetime) -> None:
        """What every job missed while no host ran; all of it again once the store works, if it failed."""
        misses = self.call.link.misses
        holds = self.call(self.store.catchup_holds, {})
        self.all(now, holds=holds)
        if self.call.link.misses != misses:  # the store failed on the way
            self.owe(None)
        elif holds:  # given up by this start (recorded missed, so no later start runs them): done
            self.call(lambda: self.store.drop_catchup_holds(list(holds)), None)
        self._resumes = self.call(self.store.resumes, None)  # resumes from here on are caught up

    # -- after a pause ---------------------------------------------------

    def resumed(self) -> None:
        """A job resumed since the last heartbeat (even paused and resumed in between, on any host)
        gets its catch-up for the slots skipped while paused."""
        resumes = self.call(self.store.resumes, None)
        if resumes is None:
            return
        seen, self._resumes = self._resumes, resumes
        if seen is None:  # the first look: nothing to compare with
            return
        resumed = {name for name, count in resumes.items() if count > seen.get(name, 0)}
        if EVERY_JOB in resumed:  # a freeze ended: every job, but those still paused on their own
            resumed |= set(self.jobs) - self.call(self.store.paused_jobs, set(self.jobs))
        if resumed:
            self.admission.paused.forget()  # read before the resume, perhaps
            now, settled = self.clock(), self.call(self.store.settled_slots, {})
            for name in sorted(resumed & set(settled) & set(self.jobs)):
                self.one(self.jobs[name], settled[name], now, after_pause=True)
