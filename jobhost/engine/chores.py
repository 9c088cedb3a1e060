"""The loop's periodic work, done between its waits: the tick and the heartbeat.

The tick (every lease / 3 on a shared store, once a heartbeat alone on one): renew this
host's claims, recover from an outage, write what it held back, stop the runs asked to be
cancelled, take over dead hosts' claims and pick up their retries, look again at slots
waiting on other hosts, check the clock. The heartbeat: the loop's sign of life, a batch of pruning, resumed jobs caught up.
Work due very soon is done when the loop is awake anyway, not in a wakeup of its own.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Collection

from jobhost.clock import Clock
from jobhost.config import HostConfig
from jobhost.engine.admission import Admission
from jobhost.engine.attempt import Attempt
from jobhost.engine.backlog import Backlog
from jobhost.engine.cancels import Cancels
from jobhost.engine.catchup import CatchUp
from jobhost.engine.dependencies import Dependencies
from jobhost.engine.leases import Leases
from jobhost.engine.oneoffs import OneOffs
from jobhost.engine.recorder import Recorder, StoreCalls
from jobhost.engine.recovery import DIED, KEEPER_DIED, recover
from jobhost.engine.retries import Retries
from jobhost.engine.stopping import Stop
from jobhost.observe.events import Lifecycle
from jobhost.outcomes import Outcome, RunStatus
from jobhost.runs.runner import Runner
from jobhost.store.model import EVERY_JOB

COALESCE = 1.0  # seconds early (a tenth of its period at most) periodic work is done if the loop is awake
LOST = "this host lost the run's lease to another host"


logger = logging.getLogger("jobhost.host")


def drop_lost(lost: list[Attempt], runner: Runner, backlog: Backlog | None = None) -> None:
    """Another host took these claims over: a run going is stopped at once, and nothing more of
    it is written; an attempt not started is dropped from wherever it waits."""
    for attempt in lost:
        attempt.lost = True
        if attempt.run_id in runner.active:
            runner.stop(attempt, Outcome(RunStatus.INTERRUPTED, LOST), at_once=True)
        elif backlog is not None:
            backlog.unpark(attempt)


class Chores:
    """When the tick and the heartbeat are due, and what each does."""

    def __init__(
        self,
        config: HostConfig,
        calls: StoreCalls,
        leases: Leases,
        recorder: Recorder,
        backlog: Backlog,
        runner: Runner,
        stop: Stop,
        admission: Admission,
        dependencies: Dependencies,
        retries: Retries,
        catch_up: CatchUp,
        cancels: Cancels,
        one_offs: OneOffs,
        lifecycle: Lifecycle,
        clock: Clock,
        monotonic: Callable[[], float],
        tell: Callable[[], None],
    ):
        self.config = config
        self.calls = calls
        self.leases = leases
        self.recorder = recorder
        self.backlog = backlog
        self.runner = runner
        self.stop = stop
        self.admission = admission
        self.dependencies = dependencies
        self.retries = retries
        self.catch_up = catch_up
        self.cancels = cancels
        self.one_offs = one_offs
        self.lifecycle = lifecycle
        self.clock = clock
        self.monotonic = monotonic
        self.tell = tell
        self.next_tick = 0.0
        self.next_beat = float("inf")
        self.recovered = True  # whether what the last host left was settled (False: again after an outage)

    def run_due(self) -> None:
        """Awake anyway: periodic work due very soon is done now, not in a wakeup of its own."""
        if self._nearly(self.next_tick, self.leases.interval):
            self.tick()
        if self._nearly(self.next_beat, self.config.heartbeat_interval):
            self.beat()
            self.recorder.prune()
            self.end_pauses()
            self.catch_up.resumed()

    def end_pauses(self) -> None:
        """Resume the jobs paused until now (on whichever host looks first); catch-up then runs
        their missed slots by their policy, as after any resume."""
        for name in self.calls(lambda: self.calls.store.end_pauses(self.clock()), []):
            if name == EVERY_JOB:
                logger.info("every job resumed: the freeze ended", extra={"event": "jobs_thawed"})
            else:
                logger.info("%s resumed: its pause ended", name, extra={"event": "job_resumed", "job": name})

    def next_wait(self) -> float:
        now = self.monotonic()
        return min(self.config.heartbeat_interval, self.next_beat - now, self.next_tick - now)

    def tick_now(self) -> None:
        """The store is back: the tick that catches up comes at once, not a lease later."""
        self.next_tick = min(self.next_tick, self.monotonic())

    def _nearly(self, deadline: float, every: float) -> bool:
        return self.monotonic() >= deadline - min(COALESCE, every / 10)

    def recover(self, now: dt.datetime) -> None:
        """Settle the runs the previous host left running; again after an outage, if it failed."""
        mine = {*self.runner.active, *(settlement.run_id for settlement, _ in self.recorder.unsent)}
        self.recovered = self._recover(now, mine=mine)

    def _recover(
        self, now: dt.datetime, *, mine: Collection[str] = (), only: Collection[str] | None = None, died: str = DIED
    ) -> bool:
        return recover(
            self.calls.store,
            self.lifecycle,
            self.config.hostname,
            self.recorder.result_file,
            now,
            call=self.calls,
            mine=mine,
            kept=self.admission.kept,
            only=only,
            died=died,
        )

    def look_at_kept(self, now: dt.datetime) -> None:
        """Runs kept on after the last restart: those whose keeper died unrecorded (killed, out of
        memory) are settled as the start settles them; those that recorded their end are forgotten."""
        kept = self.admission.kept
        if kept.runs:
            self._recover(now, only=set(kept.runs), died=KEEPER_DIED)
            open_now = {r.run_id for r in self.calls(lambda: self.calls.store.running(self.config.hostname), [])}
            kept.ended([run_id for run_id in list(kept.runs) if run_id not in open_now])

    def tick(self) -> None:
        """Every lease / 3: renew this host's claims, take over dead hosts' runs, pick up what
        other hosts changed, and write what an outage held back."""
        self.next_tick = self.monotonic() + self.leases.interval
        now = self.clock()
        drop_lost(self.leases.renew(self.recorder.unsent_tokens()), self.runner, self.backlog)
        if self.calls.link.recovered():
            self.leases.outage_ended()
            self.backlog.unstall()
            if not self.recovered:  # the store failed at the start: what the last host left, settled now
                self.recover(now)
        if not self.calls.up:
            return
        self.recorder.flush()
        self.look_at_kept(now)
        self.cancels.look()  # requests made on other hosts (this one's nudge the loop at once)
        self.one_offs.refresh()
        self.catch_up.pay(now)
        if self.leases.due_to_look():
            if not self.stop.requested:
                for taken in self.leases.take_over():
                    self.admission.took_over(taken, now)
            self.retries.merge()
        for attempt in self.dependencies.look_again():
            self.admission.admit(attempt)
        self.catch_up.unblocked(self.dependencies.unblocked(now))  # a parent fixed by hand on any host
        self.admission.look_behind_remote()
        if self.monotonic() >= self.leases.next_skew_check:
            self.leases.check_clock()

    def beat(self, *, stopped: bool = False) -> None:
        """The loop's sign of life, for `health` (written at least every heartbeat_interval)."""
        self.next_beat = self.monotonic() + self.config.heartbeat_interval
        self.recorder.beat(stopped=stopped)
        if not stopped:
            self.tell()
            self.lifecycle.beat()
