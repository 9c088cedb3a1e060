"""One run in the foreground (`run`, `backfill`), wrapped like any run of the loop: claimed
when asked, recorded, isolated, logged and reported; a signal (Ctrl-C) stops it at once.

It is made of the loop's own parts (the recorder, leases, the launcher and the runner),
without the loop: nothing else is due, waits or retries here.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from jobhost.clock import Clock
from jobhost.clock import now as wall_now
from jobhost.config import HostConfig
from jobhost.context import Params
from jobhost.definition.spec import JobSpec
from jobhost.engine.attempt import Attempt
from jobhost.engine.cancels import Cancels
from jobhost.engine.chores import drop_lost
from jobhost.engine.launch import Launched, Launcher, prepare_process
from jobhost.engine.leases import Leases
from jobhost.engine.recorder import Recorder, StoreCalls
from jobhost.engine.retries import retry_due
from jobhost.engine.stopping import Stop
from jobhost.engine.storelink import StoreLink
from jobhost.observe.events import Lifecycle
from jobhost.observe.logs import log_output
from jobhost.outcomes import Outcome, RunStatus
from jobhost.runs.runner import Runner
from jobhost.runs.thread import RoutedStdout
from jobhost.store import StateStore

CANCEL_LOOK = 1.0  # seconds between two looks at the cancel requests while a run goes


class ForegroundRun:
    """Runs one attempt at a time, now, and waits for it."""

    def __init__(
        self,
        jobs: dict[str, JobSpec],
        store: StateStore,
        config: HostConfig | None = None,
        lifecycle: Lifecycle | None = None,
        clock: Clock = wall_now,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.jobs = jobs
        self.store = store
        self.config = config = config or HostConfig()
        self.lifecycle = lifecycle = lifecycle or Lifecycle()
        self.clock = clock
        self.monotonic = monotonic
        link = StoreLink(min(10.0, config.lease / 3), monotonic, probe=store.probe)
        self.calls = calls = StoreCalls(store, link, clock, monotonic)
        calls.on_failure = calls.told  # no status file: the terminal says it
        calls.on_up = self._renew_soon
        self.leases = leases = Leases(calls, config, list(jobs), clock, monotonic)
        self.recorder = recorder = Recorder(calls, leases, lifecycle, config, clock, monotonic)
        self.runner = runner = Runner(config.max_workers, monotonic)
        self.stop = Stop(config, monotonic, foreground=True)
        self.launcher = Launcher(jobs, config, recorder, leases, runner, lifecycle, clock)
        # A cancel asked for elsewhere: no loop's status file names this process, so it looks itself.
        self.cancels = Cancels(calls, recorder, runner, None, clock)
        self._next_cancel_look = 0.0
        self.retry_at: dt.datetime | None = None  # when the last run's next attempt is due, if it has one
        self._prepared = False
        self._next_renewal = 0.0
        if any(spec.isolation == "thread" for spec in jobs.values()):
            RoutedStdout.install(log_output)
        lifecycle.attach(jobs, config.hostname, config.heartbeat_interval)

    def run(
        self,
        spec: JobSpec,
        slot: dt.datetime,
        attempt: int = 1,
        *,
        retry: bool = False,
        claim: bool = False,
        first_attempt: int = 1,
        requested_by: str = "",
        params: Params | None = None,
    ) -> Outcome:
        """Run attempt `attempt` of `slot` now and wait for it; how it ended.

        With `retry`, a failed attempt that has attempts left sets `retry_at` (the caller
        waits and runs the next one), and is logged and reported as retried, not as final.
        With `claim` (backfill), the attempt is claimed first, so no loop runs it as well;
        `first_attempt` is where the job's retries are counted from. `requested_by`: the person
        running it, kept on its record; `params`: the parameters they gave it (checked).
        """
        if not self._prepared:
            prepare_process(self.config, self.runner)
            self._prepared = True
        self.retry_at = None
        current = Attempt.new(spec, slot, attempt, params, requested_by=requested_by)
        if claim and not self.leases.claim(current):
            why = "the state store is unreachable" if not self.calls.up else "another host or backfill has claimed it"
            return Outcome(RunStatus.SKIPPED, f"attempt {attempt} of this slot was not run: {why}")
        outcome = None
        if self.launcher.launch(current, scheduled=False, may_stall=False) is Launched.FAILED:
            assert self.launcher.failure is not None
            outcome = self._end(current, self.monotonic(), self.launcher.failure, retry, first_attempt)
        while self.runner.active:
            for ended in self._turn(self._wake_in()):
                assert ended.run is not None
                outcome = self._end(ended, ended.started_mono, ended.run.outcome(), retry, first_attempt)
            if self.leases.held and self.monotonic() >= self._next_renewal:
                self._next_renewal = self.monotonic() + self.leases.interval
                drop_lost(self.leases.renew(self.recorder.unsent_tokens()), self.runner)
        self.recorder.flush()
        return outcome or Outcome(RunStatus.CRASHED, "the run did not start")

    def _renew_soon(self) -> None:
        """The store is back: the claim of the run going is renewed now, not a renewal later."""
        self._next_renewal = min(self._next_renewal, self.monotonic())

    def _turn(self, timeout: float) -> list[Attempt]:
        self.runner.wait(timeout)
        self.stop.act(self.runner)
        if self.runner.active and self.monotonic() >= self._next_cancel_look:
            self._next_cancel_look = self.monotonic() + CANCEL_LOOK
            self.cancels.look()
        return list(self.runner.reap())

    def _wake_in(self) -> float:
        limits = [self.config.heartbeat_interval, self._next_cancel_look - self.monotonic()]
        if self.leases.held:  # a backfill renews the claim of its run
            limits.append(self._next_renewal - self.monotonic())
        limits += [t for t in (self.runner.next_wait(), self.stop.next_wait()) if t is not None]
        return max(0.0, min(limits))

    def _end(self, attempt: Attempt, started_mono: float, outcome: Outcome, retry: bool, first: int) -> Outcome:
        duration_ms = max(0, int((self.monotonic() - started_mono) * 1000))
        spec = self.jobs.get(attempt.job)
        due = retry_due(
            spec, attempt.number, outcome, attempt.slot, self.clock(), stopping=self.stop.requested, first=first
        )
        self.retry_at = due if retry else None  # the caller waits for the attempt itself
        self.recorder.ended(attempt, outcome, duration_ms, retry_at=self.retry_at, scheduled=False)
        return outcome

    def next_attempt(self, spec: JobSpec, slot: dt.datetime) -> int | None:
        """The attempt a backfill makes of `slot`: one more than any made, None if a host is on it."""
        state = self.calls(lambda: self.store.slot_state(spec.name, slot), None)
        return None if state is None or state.held else state.last_attempt + 1

    @property
    def stopping(self) -> bool:
        """True once SIGTERM, SIGINT or SIGHUP has been received."""
        self.stop.take_signals(self.runner)
        return self.stop.requested

    def wait(self, seconds: float) -> bool:
        """Wait in the foreground (between backfill attempts); False if a signal asked to stop."""
        deadline = self.monotonic() + seconds
        while not self.stopping and (left := deadline - self.monotonic()) > 0:
            self._turn(left)
        return not self.stopping

    def close(self) -> None:
        """Let the reporters send what they still hold (bounded in time)."""
        self.lifecycle.close()
