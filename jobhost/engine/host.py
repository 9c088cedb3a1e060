"""The host loop: sleep until the next slot, admit what is due, start what may start, watch
the runs in flight, settle what finished, and do the chores.

Each step is a part with one concept (see docs/design.md): `DueSlots` (what is due),
`Admission` (claim; skip, wait, queue or ready), `Backlog` (every attempt not started),
`Launcher` and `Runner` (starting and watching runs), `Recorder` (every store write and
its event), `Leases`, `Retries`, `Dependencies`, `CatchUp`, `Cancels`, `OneOffs`, `Stop` and
`Chores`. This
module only composes them and keeps their order.

Several hosts may share one state store. Each attempt of each slot is claimed in the
store before anything is recorded or started for it, and only the host whose claim
succeeds goes on.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from jobhost.clock import Clock
from jobhost.clock import now as wall_now
from jobhost.config import HostConfig
from jobhost.context import Params, RunContext
from jobhost.definition.spec import JobSpec
from jobhost.engine.admission import Admission
from jobhost.engine.attempt import Attempt, Parked
from jobhost.engine.backlog import Backlog
from jobhost.engine.cancels import Cancels
from jobhost.engine.catchup import CatchUp
from jobhost.engine.chores import Chores
from jobhost.engine.dependencies import Dependencies
from jobhost.engine.handover import KeeperSetup
from jobhost.engine.launch import Launched, Launcher, prepare_process
from jobhost.engine.leases import Leases
from jobhost.engine.memory import settle_after_start
from jobhost.engine.oneoffs import OneOffs
from jobhost.engine.recorder import Recorder, StoreCalls
from jobhost.engine.recovery import WAITED
from jobhost.engine.requests import RunRequests
from jobhost.engine.retries import Retries, retry_due
from jobhost.engine.slots import Due, DueSlots
from jobhost.engine.stopping import Stop
from jobhost.engine.storelink import StoreLink
from jobhost.hoststatus import State, StatusFile
from jobhost.observe.events import Lifecycle
from jobhost.observe.logs import log_output
from jobhost.outcomes import Outcome, RunStatus
from jobhost.runs.runner import Runner
from jobhost.runs.thread import RoutedStdout
from jobhost.store import StateStore
from jobhost.store.model import PendingRetry

logger = logging.getLogger("jobhost.host")


class Host:
    """Runs the registered jobs on their slots, at most `max_workers` at once."""

    def __init__(
        self,
        jobs: dict[str, JobSpec],
        store: StateStore,
        config: HostConfig | None = None,
        lifecycle: Lifecycle | None = None,
        clock: Clock = wall_now,
        monotonic: Callable[[], float] = time.monotonic,
        status: StatusFile | None = None,
        keeper: KeeperSetup | None = None,
    ):
        self.jobs = jobs
        self.store = store
        self.config = config = config or HostConfig()
        self.lifecycle = lifecycle = lifecycle or Lifecycle()
        self.clock = clock
        self.monotonic = monotonic
        # What the loop does, for health: in its status file, or only here (for /healthz) without one.
        self.status = status or StatusFile(None, config.hostname, config.heartbeat_interval)
        link = StoreLink(min(10.0, config.lease / 3), monotonic, probe=store.probe)
        self.calls = calls = StoreCalls(store, link, clock, monotonic)
        self.leases = leases = Leases(calls, config, list(jobs), clock, monotonic)
        self.recorder = recorder = Recorder(calls, leases, lifecycle, config, clock, monotonic)
        self.backlog = backlog = Backlog()
        self.runner = runner = Runner(config.max_workers, monotonic)
        self.stop = stop = Stop(config, monotonic, on_stopping=self._tell, on_handed=self._handed)
        self.requests = RunRequests(runner.watcher, stop)
        self.retries = retries = Retries(store, calls, jobs)
        self.dependencies = dependencies = Dependencies(jobs, calls, recorder, leases, backlog)
        self.admission = admission = Admission(
            jobs, config, calls, recorder, leases, backlog, runner, dependencies, retries
        )
        self.catch_up = catch_up = CatchUp(jobs, calls, recorder, backlog, runner, admission, clock)
        self.launcher = Launcher(jobs, config, recorder, leases, runner, lifecycle, clock, keeper)
        self.cancels = cancels = Cancels(calls, recorder, runner, backlog, clock)
        self.one_offs = one_offs = OneOffs(jobs, calls, recorder, backlog)
        self.chores = Chores(
            config, calls, leases, recorder, backlog, runner, stop, admission, dependencies, retries, catch_up,
            cancels, one_offs, lifecycle, clock, monotonic, self._tell,
        )  # fmt: skip
        calls.on_down, calls.on_up, calls.on_failure = catch_up.owe, self.chores.tick_now, self._tell
        self.slots: DueSlots | None = None  # made at the start, from the clock then
        if any(spec.isolation == "thread" for spec in jobs.values()):
            RoutedStdout.install(log_output)
        lifecycle.attach(jobs, config.hostname, config.heartbeat_interval)

    # -- the loop --------------------------------------------------------

    def run_forever(self) -> int:
        """Run until SIGTERM, SIGINT or SIGHUP; return the exit status (0)."""
        slots = self._start_up()
        while True:
            self.admission.paused.forget()  # paused jobs: one query per phase, however many are due
            if not self.stop.requested:
                now = self.clock()
                for due in slots.due_now(now):
                    self._on_due(due, now)
                for due in slots.due_within(now):
                    self._prepare(due)
                for retry in self.retries.pop_due(now):
                    self.admission.retry(retry)
                self.one_offs.admit_due(now)
                for attempt in self.requests.take():
                    self.backlog.park(attempt, Parked.READY)
                self.start_ready()
            elif not self.runner.active:
                break
            self.admission.paused.forget()  # read again after the wait, if a run ending in it asks
            self.runner.wait(self._wake_in(slots))  # pipes, pidfds, the signal pipe: the only blocking call
            self.stop.act(self.runner)  # new signals, the grace deadline
            if self.runner.watcher.take_nudge():  # a cancel, a one-off, a fixed parent, a kept run's end
                self.cancels.look()
                self.one_offs.refresh()
                self.retries.merge()
                for attempt in self.dependencies.look_again():  # a parent that ended under its keeper
                    self.admission.admit(attempt)
                self.admission.look_behind_remote()  # a slot queued behind it
                self.catch_up.unblocked(self.dependencies.unblocked(self.clock()))
            for attempt in self.runner.reap():
                self.on_finished(attempt)
            self.admission.paused.forget()
            self.chores.run_due()
        self._shut_down()
        return 0

    def _start_up(self) -> DueSlots:
        """Recover what the last host left, take back this host's own claims, catch up, first beat."""
        prepare_process(self.config, self.runner)
        now = self.clock()
        self.calls(self.store.report_unreadable, 0)  # named once each; set aside by every query after
        self.chores.recover(now)
        self.chores.beat()
        self.slots = slots = DueSlots(
            {name: spec.schedule for name, spec in self.jobs.items()}, now, self.config.prepare_ahead
        )
        self.retries.merge()
        # What this host had claimed but not started when it stopped: its own again, at once.
        for taken in self.leases.take_over(own=True):
            self.admission.took_over(taken, now)
        self.catch_up.at_start(now)
        self.one_offs.refresh()
        self.leases.check_clock()
        settle_after_start()
        logger.info(
            "host started: %d jobs, %d workers",
            len(self.jobs),
            self.config.max_workers,
            extra={
                "event": "host_started",
                "jobs": len(self.jobs),
                "max_workers": self.config.max_workers,
                "release": self.status.release,
            },
        )
        return slots

    def _on_due(self, due: Due, now: dt.datetime) -> None:
        spec = self.jobs[due.name]
        if due.first < due.slot:  # the loop woke late: several slots passed
            self.catch_up.one(spec, due.first.astimezone(dt.UTC) - dt.timedelta(microseconds=1), now)
        else:
            self.admission.dispatch(spec, due.slot)

    def _prepare(self, due: Due) -> None:
        """A slot due within the lead: its run prepared now if it can be decided on, else at its instant."""
        assert self.slots is not None
        spec = self.jobs[due.name]
        if not self.admission.preparable(spec):
            self.slots.defer(due)  # decided at its instant, as any other slot
        elif not self.admission.dispatch(spec, due.slot, release=True) and not self.calls.up:
            self.slots.defer(due)  # the store is out of reach: again at the instant

    def start_ready(self) -> None:
        """Start attempts that are ready while a worker is free (the loop's step; tests call it too)."""
        while self.backlog.has_ready and self.runner.free > 0:
            self._start(self.backlog.pop_ready())

    def _start(self, attempt: Attempt) -> None:
        if attempt.one_off and not self.one_offs.take(attempt):  # taken from the store as it starts: once
            return
        if not attempt.manual and not self.leases.claim(attempt):  # a backlog slot: claimed as it starts
            if not self.calls.up:
                self.backlog.park(attempt, Parked.STALLED)
            return  # else another host has it
        launched = self.launcher.launch(attempt, scheduled=not attempt.manual, may_stall=not attempt.manual)
        if launched is Launched.STALLED:  # started once the store is back (at its instant, if still to come)
            self.backlog.park(attempt, Parked.STALLED)
        elif launched is Launched.FAILED:
            assert self.launcher.failure is not None
            self._end(attempt, self.monotonic(), self.launcher.failure)

    def _wake_in(self, slots: DueSlots) -> float:
        """Seconds the loop may sleep: until the earliest thing any part has to do."""
        limits = [self.chores.next_wait()]
        if not self.stop.requested:  # while stopping, only the runs going on matter
            wakeups = (slots.next_wakeup(), self.retries.next_wakeup(), self.one_offs.next_wakeup())
            upcoming = [t for t in wakeups if t is not None]
            if upcoming:
                limits.append((min(upcoming) - self.clock()).total_seconds())
            if self.backlog.has_ready and self.runner.free > 0:
                limits.append(0)
        limits += [t for t in (self.runner.next_wait(), self.stop.next_wait()) if t is not None]
        return max(0.0, min(limits))

    # -- what finished ---------------------------------------------------

    def on_finished(self, attempt: Attempt) -> None:
        """A run ended (or a prepared one was cancelled): settle it, then what waited on it."""
        run = attempt.run
        assert run is not None
        if run.cancelled:  # prepared, but the stop came first
            self.recorder.withdraw(attempt)
            return
        if run.handed:  # its keeper took it after all, late: the keeper records it
            self._handed([attempt])
            return
        self._end(attempt, attempt.started_mono, run.outcome())
        # A run asked for by hand may end while the scheduled one goes on: the queue waits for both.
        spec = self.jobs[attempt.job]
        if not self.stop.requested and (spec.overlap == "allow" or not self.runner.going(attempt.job)):
            self.backlog.next_behind(attempt.job)

    def _end(self, attempt: Attempt, started_mono: float, outcome: Outcome) -> None:
        duration_ms = max(0, int((self.monotonic() - started_mono) * 1000))  # 0: ended before its instant
        spec = self.jobs.get(attempt.job)
        retry_at = None
        if not attempt.manual:  # a run by hand is one run, never retried
            retry_at = retry_due(
                spec, attempt.number, outcome, attempt.slot, self.clock(), stopping=self.stop.requested
            )
        retry = None if retry_at is None else PendingRetry(retry_at, attempt.job, attempt.slot, attempt.number + 1)
        self.recorder.ended(attempt, outcome, duration_ms, retry, retry_at=retry_at, scheduled=not attempt.manual)
        if retry is not None:
            self.retries.add(retry)
        # A run by hand that fails is no verdict on the slot: its own attempts may still succeed.
        final = retry_at is None and not attempt.manual
        for released in self.dependencies.parent_ended(attempt, outcome, final=final):
            self.admission.admit(released)
        if attempt.manual and outcome.status == RunStatus.SUCCEEDED:  # a person fixed a slot: its children run
            self.catch_up.unblocked(self.dependencies.unblocked(self.clock(), parent=attempt.job))

    # -- stopping --------------------------------------------------------

    def _handed(self, attempts: list[Attempt]) -> None:
        """Runs their keepers carry on: their claims and their ends are the keepers' now."""
        for attempt in attempts:
            self.leases.let_go(attempt)
            logger.info(
                "run %s of %s is handed over to its keeper: it goes on to its end, and records it",
                attempt.run_id,
                attempt.job,
                extra={"event": "run_handed_over", **attempt.context.fields()},
            )

    def _shut_down(self) -> None:
        """Record what did not start as interrupted, close waiting slots, write what is unsent, last beat."""
        if self.calls.up:  # what an outage owes is recorded now (interrupted, if it would run), not forgotten
            self.catch_up.pay(self.clock())
        self.backlog.unstall()
        self.backlog.ready_all_behind_remote()
        for attempt in self.requests.close():
            self.backlog.park(attempt, Parked.READY)
        for attempt in self.backlog.drain_ready():
            reason = "the host stopped before a worker was free"
            if attempt.one_off:  # still pending in the store: the next start runs it
                self.one_offs.leave(attempt)
            elif attempt.manual:  # not claimed: recorded as `run` records one
                self.recorder.unclaimed(attempt, RunStatus.INTERRUPTED, reason)
            else:
                self.recorder.unstarted(attempt, RunStatus.INTERRUPTED, reason)
        for attempt in self.backlog.drain_behind():
            self.recorder.unstarted(attempt, RunStatus.INTERRUPTED, "the host stopped before the run could start")
        for attempt in self.backlog.waiting_on_parents():
            self.recorder.settle_unstarted(attempt, RunStatus.WAITING, WAITED)
        self.recorder.flush()
        self.runner.watcher.finish()
        self.chores.beat(stopped=True)
        self.close()
        logger.info("host stopped", extra={"event": "host_stopped"})
        self.status.write(State.STOPPED)
        self.status.close()

    def close(self) -> None:
        """Let the reporters send what they still hold (bounded in time)."""
        self.lifecycle.close()

    def _tell(self) -> None:
        """Say in the status file what the loop does now: at each heartbeat, and when the store
        begins or stops failing (so health says it at once, even where no heartbeat can be written)."""
        failure = self.calls.told()
        if not self.stop.requested:
            self.status.write(State.RUNNING, store_failure=failure)
        else:
            self.status.write(State.STOPPING, self.stop.why, store_failure=failure)

    # -- for other threads (the HTTP face) -------------------------------

    def request_run(
        self, spec: JobSpec, slot: dt.datetime, requested_by: str, params: Params | None = None
    ) -> RunContext:
        """One run of `spec` for `slot` now, asked for by hand by `requested_by`, with `params`
        (see RunRequests.ask)."""
        return self.requests.ask(spec, slot, requested_by, params)

    def nudge(self) -> None:
        """Have the loop look at the store's requests (cancels, one-off runs) at its next turn, not its
        next tick (from any thread: the HTTP API's, after it wrote one)."""
        self.runner.watcher.nudge()

    def counts(self) -> tuple[int, int, int]:
        """Runs in flight (a prepared run once released), runs due but not started (waiting for a worker,
        for their job's previous run, or for the state store), and slots waiting for the jobs they come
        after; read from another thread (for metrics)."""
        queued, waiting = self.backlog.counts()
        return self.runner.running(), queued + len(self.requests), waiting
