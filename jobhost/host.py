"""The host loop: sleep until the next slot, dispatch due runs, watch the runs in flight.

One thread does it all with a selector over the runs' pipes, their pidfds and
a signal wake-up pipe, so forking is safe and nothing blocks the loop. Signal
handlers only record the signal; the loop acts on it.

Several hosts may share one state store. Each attempt of each slot is claimed in
the store before anything is recorded or started for it, and only the host whose
claim succeeds goes on. Every `lease / 3` the loop renews its claims, takes over
those whose host stopped renewing, picks up retries other hosts left, and looks
again at slots waiting on another host's run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobhost.catchup import plan_catchup
from jobhost.clock import Clock
from jobhost.clock import now as wall_now
from jobhost.context import RunContext
from jobhost.dependencies import describe, unmet
from jobhost.durations import format_duration
from jobhost.exits import signal_name
from jobhost.hostconfig import HostConfig
from jobhost.hoststatus import State, StatusFile
from jobhost.lifecycle import Lifecycle, RunEvent, log_output, log_record
from jobhost.memory import settle_after_start
from jobhost.outcomes import Outcome, RunStatus
from jobhost.processrun import RELEASE_RECHECK, ProcessRun
from jobhost.recovery import WAITED, recover
from jobhost.registry import JobSpec
from jobhost.retries import RetryQueue, backoff
from jobhost.run import Run
from jobhost.slotqueue import Due, SlotQueue
from jobhost.store import RunRecord, StateStore
from jobhost.store.model import LEASE_EXPIRED, PendingRetry, Settlement, TakenOver
from jobhost.storelink import StoreLink
from jobhost.threadrun import RoutedStdout, ThreadRun
from jobhost.watcher import Watcher

logger = logging.getLogger("jobhost.host")


class HostStopping(Exception):
    """The host is stopping: it starts nothing new."""


POLL_INTERVAL = 0.2  # seconds, only where a child's exit cannot be watched with a pidfd
PRUNE_BATCH = 500  # runs deleted at most per heartbeat
PRUNE_EVERY = 3600.0  # seconds between two prunes when the last one left nothing behind
COALESCE = 1.0  # seconds early (a tenth of its period at most) periodic work is done if the loop is awake
LONE_LOOK_EVERY = 3600.0  # seconds between two looks for claims to take over, alone on a store
SKEW_WARNING = 2.0  # seconds between the host's clock and the store's before a warning
SKEW_CHECK_EVERY = 600.0  # seconds between two looks at the clocks


def _prepared(run: Run) -> bool:
    """A run forked ahead of its slot and not released yet: not going, and nothing started."""
    return isinstance(run, ProcessRun) and run.released is False


@dataclass
class _Active:
    run: Run
    started_mono: float
    stop_requested: bool = False


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
    ):
        self.jobs = jobs
        self.store = store
        self.config = config or HostConfig()
        self.lifecycle = lifecycle or Lifecycle()
        self.clock = clock
        self.monotonic = monotonic
        self.active: dict[str, _Active] = {}
        self.pending: deque[RunContext] = deque()
        self.queued_overlap: dict[str, deque[RunContext]] = {}
        self.waiting: list[RunContext] = []  # child slots held by after=
        self.behind_remote: dict[str, RunContext] = {}  # overlap="queue" slots behind another host's run
        self._stalled: list[RunContext] = []  # claimed, but the store was out of reach when they were due
        self._release_at: dict[str, dt.datetime] = {}  # run_id -> the slot a prepared run starts at
        self._deferred: list[Due] = []  # due within the lead but not prepared: dispatched at their instant
        self._watch_at: dict[str, float] = {}  # run_id -> when the loop starts watching a prepared run
        self.link = StoreLink(min(10.0, self.config.lease / 3), monotonic, probe=store.probe)
        # What the loop does, for health: in its status file, or only here (for /healthz) without one.
        self.status = status or StatusFile(None, self.config.hostname, self.config.heartbeat_interval)
        self._told_failure: str | None = None  # the store's failure the status last said
        self._tokens: dict[str, int] = {}  # run_id -> token of the claim this host holds for it
        self._lost_runs: set[str] = set()  # runs whose claim another host took over: nothing more is written
        self._known_retries: set[tuple[str, float, int]] = set()
        self._unsent: list[tuple[Settlement, int | None]] = []  # ends not yet written (store unreachable)
        self.watcher = Watcher()
        self._stop_signal: int | None = None
        self._stop_deadline: float | None = None
        self._requested: deque[RunContext] = deque()  # runs asked for from another thread (the HTTP API)
        self._manual: set[str] = set()  # run_ids of runs asked for by hand: unclaimed, not retried
        self._requests_open = threading.Lock()  # a request is taken, or refused, never lost at the stop
        self._requests_closed = False
        self._caught_up: set[str] = set()  # run_ids of catch-up runs not yet started
        if any(spec.isolation == "thread" for spec in jobs.values()):
            RoutedStdout.install(log_output)
        self.lifecycle.attach(jobs, self.config.hostname, self.config.heartbeat_interval)

    # -- the two ways to run ---------------------------------------------

    def _result_file(self, context: RunContext) -> Path | None:
        return None if self.config.results_dir is None else self.config.results_dir / f"{context.run_id}.json"

    def _prepare(self) -> None:
        if self.config.results_dir is not None:
            self.config.results_dir.mkdir(parents=True, exist_ok=True)
        self.watcher.install_signals()
        if self.config.capture_stray_output:
            self.watcher.capture_stray_output()

    def run_forever(self) -> int:
        """Run until SIGTERM, SIGINT or SIGHUP; return the exit status (0)."""
        self._prepare()
        now = self.clock()
        self._s(self.store.report_unreadable, 0)  # named once each; set aside by every query after
        self._recover(now)
        self._beat()
        queue = SlotQueue({name: spec.schedule for name, spec in self.jobs.items()}, now)
        self._retries = RetryQueue()
        self._merge_retries()
        # What this host had claimed but not started when it stopped: its own again, at once.
        own = self._s(
            lambda: self.store.take_over(self.config.hostname, list(self.jobs), self.config.lease, now, own=True), []
        )
        for taken in own:
            self._took_over(taken, now)
        misses = self.link.misses
        self._catch_up_all(now)
        if self.link.misses != misses:  # the store failed on the way: all of it again, once it works
            self._owe_catch_up(None)
        self._resumes = self._s(self.store.resumes, None)  # resumes from here on are caught up
        self._check_clock()
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
        while True:
            self._paused_now = None
            if self._stop_signal is None:
                now = self.clock()
                self._deferred, deferred = [], self._deferred
                for due in [*deferred, *queue.pop_due(now)]:
                    if due.slot > now:
                        self._deferred.append(due)
                    else:
                        self._on_due(due, now)
                for due in queue.pop_next(now + dt.timedelta(seconds=self.config.prepare_ahead)):
                    spec = self.jobs[due.name]
                    if not self._preparable(spec):
                        self._deferred.append(due)  # decided at its instant, as any other slot
                    elif not self._dispatch(spec, due.slot, release=True) and not self.link.up:
                        self._deferred.append(due)  # the store is out of reach: again at the instant
                for retry in self._retries.pop_due(now):
                    self._dispatch_retry(retry)
                while self._requested:
                    self._take_request(self._requested.popleft())
                self._start_pending()
            elif not self.active:
                break
            next_slot = queue.next_due()
            upcoming = [due.slot for due in self._deferred]
            upcoming += [t for t in (self._retries.next_due(),) if t is not None]
            if next_slot is not None:  # woken a lead early, to prepare its run
                upcoming.append(next_slot - dt.timedelta(seconds=self.config.prepare_ahead))
            if self._stop_signal is not None:  # nothing new starts: only the runs going on matter
                upcoming = []
            self._paused_now = None  # read again after the wait, if a run ending in it asks
            self._turn(self._sleep_seconds(min(upcoming, default=None)))
            self._paused_now = None
            # Awake anyway: periodic work due very soon is done now, not in a wakeup of its own.
            if self._nearly(self._next_tick, self._tick_every()):
                self._tick()
            if self._nearly(self._next_beat, self.config.heartbeat_interval):
                self._beat()
                self._prune_history()
                self._catch_up_resumed()
        if self.link.up:  # what an outage owes is recorded now (interrupted, if it would run), not forgotten
            self._pay_catch_up(self.clock())
        self._abandon_pending()
        for context in self.waiting:
            self._settle_unstarted(context, RunStatus.WAITING, WAITED)
        self._flush_unsent()
        self.watcher.finish()
        self._beat(stopped=True)
        self.close()
        logger.info("host stopped", extra={"event": "host_stopped"})
        self.status.write(State.STOPPED)
        self.status.close()
        return 0

    def _recover(self, now: dt.datetime) -> None:
        """Settle the runs the previous host left running; again after an outage, if it failed."""
        self._recovered = recover(
            self.store,
            self.lifecycle,
            self.config.hostname,
            self._result_file,
            now,
            call=self._s,
            mine={*self.active, *(settlement.run_id for settlement, _ in self._unsent)},  # ended, end unwritten
        )

    _recovered = True

    def close(self) -> None:
        """Let the reporters send what they still hold (bounded in time); after `run_now` too."""
        self.lifecycle.close()

    def run_now(
        self,
        spec: JobSpec,
        slot: dt.datetime,
        attempt: int = 1,
        *,
        retry: bool = False,
        claim: bool = False,
        first_attempt: int = 1,
    ) -> Outcome:
        """One run in the foreground (`run`, `backfill`), wrapped like any other.

        With `retry`, a failed attempt that has attempts left sets `retry_at` (the caller
        waits and runs the next one), and is logged and reported as retried, not as final.
        With `claim` (backfill), the attempt is claimed first, so no loop runs it as well;
        `first_attempt` is where the job's retries are counted from.
        A signal (Ctrl-C) stops the run at once rather than after the stop grace.
        """
        if not self._foreground:
            self._prepare()
            self._foreground = True
        self._last_outcome = None
        self._foreground_retry = retry
        self._first_attempt = first_attempt
        self.retry_at = None
        context = self._context(spec, slot, attempt)
        if claim and not self._claim(context):
            why = "the state store is unreachable" if not self.link.up else "another host or backfill has claimed it"
            return Outcome(RunStatus.SKIPPED, f"attempt {attempt} of this slot was not run: {why}")
        self._start(context)
        while self.active:
            self._turn(self._sleep_seconds(None))
            if self._tokens and self.monotonic() >= self._next_tick:
                self._next_tick = self.monotonic() + self._tick_every()
                self._renew()
        self._flush_unsent()
        return self._last_outcome or Outcome(RunStatus.CRASHED, "the run did not start")

    def next_attempt(self, spec: JobSpec, slot: dt.datetime) -> int | None:
        """The attempt a backfill makes of `slot`: one more than any made, None if a host is on it."""
        state = self._s(lambda: self.store.slot_state(spec.name, slot), None)
        return None if state is None or state.held else state.last_attempt + 1

    def pause(self, seconds: float) -> bool:
        """Wait in the foreground (between backfill attempts); False if a signal asked to stop."""
        deadline = self.monotonic() + seconds
        while not self.stopping and (left := deadline - self.monotonic()) > 0:
            self._turn(left)
        return not self.stopping

    def request_run(self, spec: JobSpec, slot: dt.datetime) -> RunContext:
        """Ask the loop, from another thread, for one run of `spec` for `slot` now, as `run` makes
        one: not claimed, not retried, whatever the schedule, pause or overlap say. It waits for a
        free worker like any other run. Raises HostStopping once the host is stopping."""
        context = self._context(spec, slot)
        with self._requests_open:
            if self._stop_signal is not None or self.watcher.signals or self._requests_closed:
                raise HostStopping("the host is stopping; no new run starts")
            self._requested.append(context)
        self.watcher.wake()
        return context

    def load(self) -> tuple[int, int, int]:
        """Runs in flight (a prepared run once released), runs due but not started (waiting for a worker,
        for their job's previous run, or for the state store), and slots waiting for the jobs they come
        after; read from another thread (for metrics)."""
        queued = len(self.pending) + len(self._requested) + sum(map(len, list(self.queued_overlap.values())))
        queued += len(self.behind_remote) + len(self._stalled)
        going = sum(1 for a in list(self.active.values()) if not _prepared(a.run))
        return going, queued, len(self.waiting)

    @property
    def stopping(self) -> bool:
        """True once SIGTERM, SIGINT or SIGHUP has been received."""
        self._handle_signals()
        return self._stop_signal is not None

    _foreground = False
    _foreground_retry = False
    _first_attempt = 1  # retries are counted from this attempt (a backfill after earlier attempts)
    _last_outcome: Outcome | None = None
    retry_at: dt.datetime | None = None  # when the foreground run's next attempt is due, if it has one

    # -- one turn of the loop --------------------------------------------

    def _turn(self, timeout: float) -> None:
        for run_id, fd in self.watcher.wait(timeout):
            if run_id in self.active:
                self.watcher.release(self.active[run_id].run.on_readable(fd, self.monotonic()))
        self._handle_signals()
        now = self.monotonic()
        for run_id, at in list(self._watch_at.items()):
            if now >= at:
                del self._watch_at[run_id]
                if run_id in self.active:
                    self.watcher.watch(run_id, self.active[run_id].run.fds())
        if self._stop_deadline is not None and now >= self._stop_deadline:
            self._stop_runs(at_once=False)
        for run_id, active in list(self.active.items()):
            self.watcher.release(active.run.poll(now))
            if active.run.done:
                self._finish(run_id)

    def _nearly(self, deadline: float, every: float) -> bool:
        return self.monotonic() >= deadline - min(COALESCE, every / 10)

    def _beat(self, *, stopped: bool = False) -> None:
        """The loop's sign of life, for `health` (written at least every heartbeat_interval)."""
        self._next_beat = self.monotonic() + self.config.heartbeat_interval
        self._s(lambda: self.store.beat(self.config.hostname, os.getpid(), self.clock(), stopped=stopped), None)
        if not stopped:
            self._tell()
            self.lifecycle.beat()

    def _tell(self) -> None:
        """Say in the status file what the loop does now: at each heartbeat, and when the store
        begins or stops failing (so health says it at once, even where no heartbeat can be written)."""
        self._told_failure = failure = self.link.failure
        if self._foreground:
            return
        if self._stop_signal is None:
            self.status.write(State.RUNNING, store_failure=failure)
        else:
            reason = f"{signal_name(self._stop_signal)}: runs in flight finish within the stop grace"
            self.status.write(State.STOPPING, reason, store_failure=failure)

    _next_beat = float("inf")

    def _s(self, call: Callable[[], object], fallback: object) -> Any:
        """Call the store through the link: a failure is logged, and the loop goes on."""
        was_up = self.link.up
        value = self.link.call(call, fallback)
        if was_up and not self.link.up:  # an outage begins: what fell due from the last call that worked is owed
            self._owe_catch_up(self.clock() - dt.timedelta(seconds=self.monotonic() - self.link.last_ok + 1))
        elif not was_up and self.link.up:  # it ends: the tick that catches up comes at once, not a lease later
            self._next_tick = min(self._next_tick, self.monotonic())
        if self.link.failure != self._told_failure:
            self._tell()
        return value

    # -- claims, leases and the other hosts --------------------------------

    def _tick(self) -> None:
        """Every lease / 3: renew this host's claims, take over dead hosts' runs, pick up what
        other hosts changed, and write what an outage held back."""
        self._next_tick = self.monotonic() + self._tick_every()
        now = self.clock()
        self._renew()
        if self.link.recovered():
            # Hosts cut off with this one need a lease to renew theirs before any is taken over.
            self._take_over_after = self.monotonic() + self.config.lease
            self.pending.extend(self._stalled)
            self._stalled.clear()
            if not self._recovered:  # the store failed at the start: what the last host left, settled now
                self._recover(now)
        if not self.link.up:
            return
        self._flush_unsent()
        self._pay_catch_up(now)
        # Alone on its store, a host has only its own crashed backfills to take over and its own
        # retries, already queued: looking hourly is enough, and an idle host stays idle.
        if getattr(self.store, "shared", True) or self.monotonic() >= self._next_lone_look:
            self._next_lone_look = self.monotonic() + LONE_LOOK_EVERY
            if self._stop_signal is None and self.monotonic() >= self._take_over_after:
                for taken in self._s(
                    lambda: self.store.take_over(self.config.hostname, list(self.jobs), self.config.lease, now), []
                ):
                    self._took_over(taken, now)
            self._merge_retries()
        self._look_at_waiting()
        self._look_behind_remote()
        if self.monotonic() >= self._next_skew_check:
            self._check_clock()

    _next_tick = 0.0

    def _tick_every(self) -> float:
        """Seconds between ticks: a third of the lease on a shared store; alone on its store (SQLite)
        a host has nobody to take over from or to wait on, so once a heartbeat is enough."""
        if getattr(self.store, "shared", True):
            return self.config.lease / 3
        return max(self.config.lease / 3, self.config.heartbeat_interval)

    _take_over_after = 0.0
    _next_lone_look = 0.0
    _next_prune = 0.0
    _next_skew_check = 0.0

    def _claim(self, context: RunContext) -> bool:
        """Claim the context's attempt for this host; True if this host holds it (now or already)."""
        if context.run_id in self._tokens:
            return True
        lease = self.config.lease
        token = self._s(
            lambda: self.store.claim(
                context.job, context.slot, context.attempt, context.run_id, self.config.hostname, lease
            ),
            None,
        )
        if token is None:
            return False
        self._tokens[context.run_id] = token
        return True

    def _renew(self) -> None:
        """Renew the claims of runs going on and of ends not yet written (also: a probe of the store)."""
        tokens = list(self._tokens.values()) + [token for _, token in self._unsent if token is not None]
        if not tokens:
            if not self.link.up:
                self._s(self.store.database_time, None)  # is it back?
            return
        held = self._s(lambda: self.store.renew(tokens, self.config.lease), None)
        if held is None:  # unreachable: the leases run on, other hosts wait for them
            return
        for run_id, token in list(self._tokens.items()):
            if token not in held:
                self._lost(run_id)

    def _lost(self, run_id: str) -> None:
        """Another host took over this host's claim (its lease ran out while this host was cut off
        or stalled): the run stops, and nothing more of it is written."""
        del self._tokens[run_id]
        message = "the lease of run %s was taken over by another host; it is stopped and its result not recorded"
        logger.warning(message, run_id, extra={"event": "lease_lost", "lost_run_id": run_id})
        if run_id in self.active:
            self._lost_runs.add(run_id)
            active = self.active[run_id]
            active.stop_requested = True
            reason = "this host lost the run's lease to another host"
            active.run.stop(Outcome(RunStatus.INTERRUPTED, reason), self.monotonic(), at_once=True)
            return
        self.pending = deque(c for c in self.pending if c.run_id != run_id)
        self.waiting = [c for c in self.waiting if c.run_id != run_id]
        for job, context in list(self.behind_remote.items()):
            if context.run_id == run_id:
                del self.behind_remote[job]
        for queued in self.queued_overlap.values():
            for context in [c for c in queued if c.run_id == run_id]:
                queued.remove(context)

    def _took_over(self, taken: TakenOver, now: dt.datetime) -> None:
        """A claim whose host stopped renewing it (or this host's own, at start) is now this host's."""
        spec = self.jobs[taken.job]
        ahead = taken.slot > now  # prepared there, but its instant has not come: it runs here, then
        if not taken.abandoned:  # claimed but never started there: dispatch it here, as a new run
            run = self._context(spec, taken.slot, taken.attempt)
            self._tokens[run.run_id] = taken.token
            self._dispatch(spec, run.slot, context=run, release=ahead)
            return
        context = RunContext(taken.job, taken.run_id, taken.slot.astimezone(spec.schedule.zone), taken.attempt)
        self._tokens[context.run_id] = taken.token
        reason = LEASE_EXPIRED.format(previous=taken.previous_host, taker=self.config.hostname)
        retry = None
        if taken.attempt <= spec.retries and not ahead:
            due = now + dt.timedelta(seconds=backoff(spec.retry_delay, taken.attempt))
            retry = PendingRetry(due, spec.name, context.slot, taken.attempt + 1)
        self._settle(
            Settlement(
                context.run_id, spec.name, context.slot, context.attempt, RunStatus.ABANDONED, reason, now, retry=retry
            )
        )
        self.lifecycle.emit(
            RunEvent(
                RunStatus.ABANDONED,
                context,
                reason,
                retry_at=None if retry is None else retry.due,
                extra={"previous_host": taken.previous_host},
            )
        )
        if retry is not None:
            self._add_retry(retry)
        elif ahead:
            self._dispatch(spec, context.slot, taken.attempt + 1, release=True)
        elif spec.catchup == "all" or (spec.catchup == "latest" and self._still_latest(spec, context.slot, now)):
            self._dispatch(spec, context.slot, taken.attempt + 1)

    def _still_latest(self, spec: JobSpec, slot: dt.datetime, now: dt.datetime) -> bool:
        following = spec.schedule.next_slot(slot.astimezone(dt.UTC))
        return following is None or following > now

    def _merge_retries(self) -> None:
        """Pending retries from the store that this host does not know yet (another host's, whose
        host may be gone): each host queues them, and the claim decides which one runs it."""
        stored = self._s(self.store.pending_retries, None)
        if stored is None:
            return
        for retry in stored:
            if retry.job in self.jobs:
                self._add_retry(retry)
        # Forget the retries that have left the store and the queue, so the set stays small.
        keep = {(r.job, r.slot.timestamp(), r.attempt) for r in stored}
        keep |= {(r.job, r.slot.timestamp(), r.attempt) for r in (self._retries or RetryQueue())}
        self._known_retries &= keep

    def _add_retry(self, retry: PendingRetry) -> None:
        key = (retry.job, retry.slot.timestamp(), retry.attempt)
        if key not in self._known_retries and self._retries is not None:
            self._known_retries.add(key)
            self._retries.add(retry)

    def _check_clock(self) -> None:
        """Leases run on the store's clock, slots on each host's: warn when they differ."""
        self._next_skew_check = self.monotonic() + SKEW_CHECK_EVERY
        before = self.clock()
        theirs = self._s(self.store.database_time, None)
        if theirs is None:
            return
        mine = before + (self.clock() - before) / 2
        skew = (mine - theirs).total_seconds()
        if abs(skew) > SKEW_WARNING:
            logger.warning(
                "this host's clock is %.1f s %s the state store's: its runs start up to that late or early; "
                "keep every host on NTP",
                abs(skew),
                "ahead of" if skew > 0 else "behind",
                extra={"event": "clock_skew", "skew_ms": int(skew * 1000)},
            )

    _resumes: dict[str, int] | None = None

    def _catch_up_resumed(self) -> None:
        """A job resumed since the last heartbeat (even paused and resumed in between, on any host)
        gets its catch-up for the slots skipped while paused."""
        resumes = self._s(self.store.resumes, None)
        if resumes is None:
            return
        seen, self._resumes = self._resumes, resumes
        if seen is None:  # the first look: nothing to compare with
            return
        resumed = {name for name, count in resumes.items() if count > seen.get(name, 0)}
        if resumed:
            self._paused_now = None  # read before the resume, perhaps
            now, settled = self.clock(), self._s(self.store.settled_slots, {})
            for name in sorted(resumed & set(settled) & set(self.jobs)):
                spec = self.jobs[name]
                self._catch_up(spec, settled[name], now, after_pause=True)

    def _prune_history(self) -> None:
        """Forget runs older than history_days, one small batch a heartbeat while some are left (so
        the loop never stalls), then once every PRUNE_EVERY (an idle host wakes for little else)."""
        if self.monotonic() < self._next_prune:
            return
        before = self.clock() - dt.timedelta(days=self.config.history_days)
        removed = self._s(lambda: self.store.prune(before, PRUNE_BATCH), 0)
        self._next_prune = self.monotonic() + (0 if removed == PRUNE_BATCH else PRUNE_EVERY)
        if removed:
            logger.info(
                "pruned %d runs older than %g days",
                removed,
                self.config.history_days,
                extra={"event": "history_pruned", "runs": removed},
            )

    def _sleep_seconds(self, next_slot: dt.datetime | None) -> float:
        limits = [self.config.heartbeat_interval, self._next_beat - self.monotonic()]
        if not self._foreground or self._tokens:  # a backfill renews the claim of its run too
            limits.append(self._next_tick - self.monotonic())
        if next_slot is not None:
            limits.append((next_slot - self.clock()).total_seconds())
        now = self.monotonic()
        for active in self.active.values():
            deadline = active.run.next_deadline()
            if deadline is not None:
                limits.append(deadline - now)
            if active.run.needs_polling:
                limits.append(POLL_INTERVAL)
        if self._stop_deadline is not None:
            limits.append(self._stop_deadline - now)
        limits += [at - now for at in self._watch_at.values()]
        if self.pending and len(self.active) < self.config.max_workers and self._stop_signal is None:
            limits.append(0)
        return max(0.0, min(limits))

    # -- dispatching ------------------------------------------------------

    def _context(self, spec: JobSpec, slot: dt.datetime, attempt: int = 1) -> RunContext:
        return RunContext(spec.name, uuid.uuid4().hex, slot.astimezone(spec.schedule.zone), attempt)

    def _dispatch(
        self,
        spec: JobSpec,
        slot: dt.datetime,
        attempt: int = 1,
        *,
        context: RunContext | None = None,
        release: bool = False,
    ) -> bool:
        """Claim the slot's attempt and decide what becomes of it; a host that loses the claim does nothing
        (False). With `release`, the slot is still to come: its run is prepared now and starts at the instant."""
        context = context or self._context(spec, slot, attempt)
        if not self._claim(context):
            return False
        if release and spec.isolation == "process":  # a thread has no process to wait in
            self._release_at[context.run_id] = slot
        if spec.name in self._paused():
            self._record_unstarted(context, RunStatus.SKIPPED, "paused", paused=True)
            return True
        if spec.after:
            missing = self._s(lambda: unmet(spec, slot, self.jobs, self.store), None)
            if missing is None:  # cannot tell now: held, and looked at again each lease / 3
                self.waiting.append(context)
                return True
            if missing:
                self._wait(context, missing, self._finally_failed(missing))
                return True
        mine = [a.run for a in self.active.values() if a.run.spec.name == spec.name]
        # A run prepared for a slot still to come is not going yet: what is due now runs after it.
        prepared = [run for run in mine if _prepared(run)]
        in_flight = [run.context.run_id for run in mine if run not in prepared]
        in_flight += [c.run_id for c in self.pending if c.job == spec.name]
        if prepared and not in_flight and spec.overlap != "allow":
            self.queued_overlap.setdefault(spec.name, deque()).append(context)
            return True
        if not in_flight and spec.overlap != "allow" and (remote := self._running_elsewhere(spec)) is not None:
            if spec.overlap == "skip" or spec.name in self.behind_remote:
                self._record_unstarted(
                    context,
                    RunStatus.SKIPPED,
                    f"the previous run {remote.run_id} was still going on host {remote.host}",
                    collided_with=remote.run_id,
                )
            else:
                self.behind_remote[spec.name] = context
            return True
        if in_flight and spec.overlap == "skip":
            other_id = in_flight[0]
            self._record_unstarted(
                context, RunStatus.SKIPPED, f"the previous run {other_id} was still going", collided_with=other_id
            )
            return True
        if in_flight and spec.overlap == "queue":
            queued = self.queued_overlap.setdefault(spec.name, deque())
            if queued:  # one waiting run is enough; a job slower than its schedule must not pile up
                self._record_unstarted(
                    context,
                    RunStatus.SKIPPED,
                    f"slot {queued[0].slot.isoformat()} is already queued behind the run still going",
                )
            else:
                queued.append(context)
            return True
        self.pending.append(context)
        return True

    def _running_elsewhere(self, spec: JobSpec) -> RunRecord | None:
        """A run of the job going on another host (for overlap), if any; alone on its store (SQLite)
        a host has no other host to ask about, and saves the query on every slot."""
        if not getattr(self.store, "shared", True):
            return None
        runs = self._s(lambda: self.store.running_runs(spec.name), [])
        return next((r for r in runs if r.host != self.config.hostname), None)

    def _look_behind_remote(self) -> None:
        """overlap="queue" slots behind another host's run: start those whose run has ended."""
        for name, context in list(self.behind_remote.items()):
            if self._running_elsewhere(self.jobs[name]) is None and self.link.up:
                del self.behind_remote[name]
                self.pending.append(context)

    def _dispatch_retry(self, retry: PendingRetry) -> None:
        spec = self.jobs.get(retry.job)
        if spec is None:  # the job is gone from jobs/
            self._s(lambda: self.store.drop_retry(retry.job, retry.slot), None)
            return
        context = self._context(spec, retry.slot, retry.attempt)
        if not self._claim(context):  # another host made it, or the store is out of reach
            if not self.link.up:  # looked at again once it is back
                self._known_retries.discard((retry.job, retry.slot.timestamp(), retry.attempt))
            return
        if any(a.run.spec.name == spec.name for a in self.active.values()):
            self.queued_overlap.setdefault(spec.name, deque()).append(context)  # after the run going on
        else:
            self.pending.append(context)

    def _next_attempt_due(self, context: RunContext, outcome: Outcome) -> dt.datetime | None:
        """When the slot's next attempt is due, if it has attempts left."""
        spec = self.jobs.get(context.job)
        made = context.attempt - self._first_attempt + 1  # attempts of this slot made so far
        if spec is None or not outcome.status.retryable or made > spec.retries or self._stop_signal is not None:
            return None
        # From the slot at the earliest: a run prepared ahead may end before its instant.
        return max(self.clock(), context.slot) + dt.timedelta(seconds=backoff(spec.retry_delay, made))

    _retries: RetryQueue | None = None

    def _wait(self, context: RunContext, missing: list[tuple[str, dt.datetime]], failed: str | None) -> None:
        """Hold a child slot until its parents' slots succeed, or record it blocked if one never will."""
        if failed is not None:
            self._record_unstarted(context, RunStatus.WAITING, f"blocked: {failed}", blocked=True)
            return
        reason = f"waiting for {describe(missing)} to succeed"
        record = self._record(context, RunStatus.WAITING, reason)
        if self._s(lambda: self.store.start_run(record, self._tokens.get(context.run_id)), None) is False:
            self._tokens.pop(context.run_id, None)
            return
        self.lifecycle.emit(RunEvent(RunStatus.WAITING, context, reason))
        self.waiting.append(context)

    def _finally_failed(self, missing: list[tuple[str, dt.datetime]]) -> str | None:
        """Which parent slot has ended for good without success (no retry pending), in words."""
        pending = {(r.job, r.slot.timestamp()) for r in self._s(self.store.pending_retries, [])}
        for parent, parent_slot in missing:
            status = self._s(lambda p=parent, s=parent_slot: self.store.final_status(p, s), None)
            if status is None or (parent, parent_slot.timestamp()) in pending:
                continue
            # An attempt still going may succeed yet (the failure may be a run by hand's).
            going = self._s(lambda p=parent: self.store.running_runs(p), [])
            if not any(r.slot.timestamp() == parent_slot.timestamp() for r in going):
                return f"{parent} {status} for slot {parent_slot.isoformat()}"
        return None

    def _settle_waiting(self, parent: RunContext, outcome: Outcome, final: bool) -> None:
        """After a parent's attempt: release the children it unblocked, report those it blocked."""
        for context in list(self.waiting):
            spec = self.jobs[context.job]
            if parent.job not in spec.after:
                continue
            missing = self._s(lambda s=spec, c=context: unmet(s, c.slot, self.jobs, self.store), None)
            if missing is None:  # cannot tell now: looked at again each lease / 3
                continue
            if not missing:
                self._release_waiting(context)
            elif final and (parent.job, parent.slot) in missing and outcome.status != RunStatus.SUCCEEDED:
                reason = f"blocked: {parent.job} {outcome.status} for slot {parent.slot.isoformat()} ({outcome.reason})"
                self._block_waiting(context, reason)

    def _look_at_waiting(self) -> None:
        """Child slots whose parents run on other hosts: release or block them as those end."""
        for context in list(self.waiting):
            spec = self.jobs[context.job]
            missing = self._s(lambda s=spec, c=context: unmet(s, c.slot, self.jobs, self.store), None)
            if missing == []:
                self._release_waiting(context)
            elif missing and (failed := self._finally_failed(missing)) is not None:
                self._block_waiting(context, f"blocked: {failed}")

    def _release_waiting(self, context: RunContext) -> None:
        """The parents succeeded: close the waiting record and dispatch the slot under the same claim."""
        self.waiting.remove(context)
        self._close_waiting(context, "released: the jobs it comes after succeeded")
        run = self._context(self.jobs[context.job], context.slot, context.attempt)
        if context.run_id in self._caught_up:  # still a catch-up run, under its new id
            self._caught_up.discard(context.run_id)
            self._caught_up.add(run.run_id)
        if (token := self._tokens.pop(context.run_id, None)) is not None:
            self._tokens[run.run_id] = token
        self._dispatch(self.jobs[context.job], context.slot, context=run)

    def _block_waiting(self, context: RunContext, reason: str) -> None:
        self.waiting.remove(context)
        self._settle_unstarted(context, RunStatus.WAITING, reason)
        self.lifecycle.emit(RunEvent(RunStatus.WAITING, context, reason, extra={"blocked": True}))

    def _close_waiting(self, context: RunContext, reason: str) -> None:
        self._s(lambda: self.store.finish_run(context.run_id, RunStatus.WAITING, reason, self.clock(), None), None)

    def _owe_catch_up(self, since: dt.datetime | None) -> None:
        """The store failed: the slots due from `since` on (None: since each job's last settled slot)
        were claimed by no host, and are caught up once the store works again."""
        if not self._owed:
            self._owed, self._owed_since = True, since
        elif self._owed_since is not None and (since is None or since < self._owed_since):
            self._owed_since = since

    def _pay_catch_up(self, now: dt.datetime) -> None:
        """Catch up what an outage kept from being claimed; owed again if the store fails meanwhile,
        so a store back for a moment only (a disk freed a little) loses no slot."""
        if not self._owed:
            return
        since, self._owed = self._owed_since, False
        misses = self.link.misses
        self._catch_up_all(now, since=since)
        if self.link.misses != misses:
            self._owe_catch_up(since)

    _owed = False  # a catch-up is owed for slots an outage kept from being claimed
    _owed_since: dt.datetime | None = None

    def _catch_up_all(self, now: dt.datetime, since: dt.datetime | None = None) -> None:
        """Every job seen before: what did it miss while the host was down, or (`since`) while the
        store was out of reach? Slots settled or claimed meanwhile are left alone."""
        settled = self._s(self.store.settled_slots, None)
        for name, spec in self.jobs.items():
            if settled is not None and name in settled:
                after = settled[name] if since is None else min(settled[name], since)
                self._catch_up(spec, after, now)

    def _catch_up(self, spec: JobSpec, after: dt.datetime, now: dt.datetime, *, after_pause: bool = False) -> None:
        """Slots after `after` up to `now`, by the job's policy: record those given up as missed,
        run the others one after another. `after_pause`: the job was paused, on purpose.
        A slot another host is on, or one settled meanwhile, is left alone."""
        plan = plan_catchup(spec.schedule, after, now, spec.catchup, spec.catchup_window)
        # Slots before `after` that never settled (a later slot did): interrupted, paused, ...
        since = now - dt.timedelta(seconds=spec.catchup_window)
        orphans = self._s(lambda: self.store.unsettled_slots(spec.name, since, after), [])
        reasons = dict(plan.missed)
        missed = [(c, reasons[c.slot]) for c in self._next_attempts(spec, [slot for slot, _ in plan.missed])]
        runs = self._next_attempts(spec, plan.run)
        if orphans and spec.catchup == "all":
            runs = self._next_attempts(spec, orphans) + runs
        elif orphans:
            why = "superseded: a later slot has run" if spec.catchup == "latest" else 'the job has catchup="none"'
            missed.extend((context, why) for context in self._next_attempts(spec, orphans))
        for index, (context, reason) in enumerate(missed):
            batch = (index, len(missed))
            extra = {"after_pause": True} if after_pause else {}
            self._record_unstarted(context, RunStatus.MISSED, reason, batch=batch, **extra)
        if spec.name in self._s(self.store.paused_jobs, set()):
            for context in runs:
                self._record_unstarted(context, RunStatus.SKIPPED, "paused", paused=True)
        elif runs:
            self._caught_up.update(context.run_id for context in runs)
            queue = self.queued_overlap.setdefault(spec.name, deque())  # claimed as each starts
            going = any(a.run.spec.name == spec.name for a in self.active.values())
            if spec.overlap != "allow" and (going or any(c.job == spec.name for c in self.pending)):
                queue.extend(runs)  # the backlog runs after the run going on, not skipped for it
            else:
                self._dispatch(spec, runs[0].slot, context=runs[0])
                queue.extend(runs[1:])

    def _next_attempts(self, spec: JobSpec, slots: list[dt.datetime]) -> list[RunContext]:
        """The attempt after any made of each slot (an abandoned or interrupted slot is run again);
        a slot another host is on, or one that has settled meanwhile, is left out."""
        contexts = []
        for slot in slots:
            state = self._s(lambda s=slot: self.store.slot_state(spec.name, s), None)
            if state is not None and not state.held and not state.settled:
                contexts.append(self._context(spec, slot, state.last_attempt + 1))
        return contexts

    def _paused(self) -> set[str]:
        """The paused jobs, read once per turn of the loop: a thousand slots due at once cost one query."""
        if self._paused_now is None:
            self._paused_now = self._s(self.store.paused_jobs, set())
        return self._paused_now

    _paused_now: set[str] | None = None  # forgotten at each turn of the loop

    def _on_due(self, due: Due, now: dt.datetime) -> None:
        spec = self.jobs[due.name]
        if due.first < due.slot:  # the loop woke late: several slots passed
            self._catch_up(spec, due.first.astimezone(dt.UTC) - dt.timedelta(microseconds=1), now)
        else:
            self._dispatch(spec, due.slot)

    def _take_request(self, context: RunContext) -> None:
        self._manual.add(context.run_id)
        self.pending.append(context)
        logger.info(
            "run %s of %s for %s asked for by hand",
            context.run_id,
            context.job,
            context.slot.isoformat(),
            extra={"event": "run_requested", **context.fields()},
        )

    def _preparable(self, spec: JobSpec) -> bool:
        """Whether a slot due within the lead can be decided on now: a worker is free, and no
        run of the job is going whose end before the instant could change what happens."""
        if spec.isolation != "process" or len(self.active) + len(self.pending) >= self.config.max_workers:
            return False
        if spec.after:  # its parents' outcome may come before the instant
            return False
        if self.queued_overlap.get(spec.name):
            return False
        going = [a.run.spec.name for a in self.active.values()] + [c.job for c in self.pending]
        if spec.name in going and spec.overlap != "allow":  # a run due now, even one not started yet
            return False
        # On a shared store, another host's run of the job is looked at, at the instant.
        return spec.overlap == "allow" or not getattr(self.store, "shared", True)

    def _start_pending(self) -> None:
        while self.pending and len(self.active) < self.config.max_workers:
            self._start(self.pending.popleft())

    def _start(self, context: RunContext) -> None:
        spec = self.jobs[context.job]
        manual = self._foreground or context.run_id in self._manual
        if not manual and not self._claim(context):  # a backlog slot: claimed as it starts
            if not self.link.up:
                self._stalled.append(context)
            else:
                self._caught_up.discard(context.run_id)  # another host has it
            return
        release = self._release_at.get(context.run_id)
        started = self.clock()
        lead = 0.0 if release is None else (release - started).total_seconds()
        if release is not None and lead > 0:
            started = release.astimezone(dt.UTC)  # recorded as it will be: the run is released at its instant
        record = self._record(context, RunStatus.RUNNING, started=started)
        if spec.isolation == "thread":  # the run's process is the host's: known now, one write fewer
            record = dataclasses.replace(record, pid=os.getpid())
        token = self._tokens.get(context.run_id)
        recorded = self._s(lambda: self.store.start_run(record, token), None)
        if recorded is None and token is not None and not self.link.up and not manual:
            self._stalled.append(context)  # started once the store is back (at its instant, if still to come)
            return
        self._release_at.pop(context.run_id, None)
        if recorded is False:
            self._tokens.pop(context.run_id, None)
            logger.warning(
                "run %s was not started: another host took its claim over",
                context.run_id,
                extra={"event": "lease_lost", "lost_run_id": context.run_id},
            )
            return
        if recorded is None and token is not None:  # the store failed: the claim, unrenewed, is taken
            self._tokens.pop(context.run_id, None)  # over a lease later and the slot run again
            self._next_lone_look = min(self._next_lone_look, self.monotonic() + self.config.lease + 1)
            return
        if lead <= 0:
            self._announce(context, started.timestamp())
        run: Run
        if spec.isolation == "thread":
            run = ThreadRun(spec, context, log_output, log_record, self.lifecycle, self.config.data_dir)
        else:
            run = ProcessRun(
                spec,
                context,
                log_output,
                log_record,
                self._result_file(context),
                self.lifecycle,
                on_started=lambda at: self._announce(context, at),
                data_dir=self.config.data_dir,
            )
        now = self.monotonic()
        try:
            if lead > 0 and isinstance(run, ProcessRun):
                # Read the clocks together, after the records: the work above must not make it late.
                lead = (release - self.clock()).total_seconds()
                run.start(now, release_at=time.monotonic() + lead)
            else:
                run.start(now)
        except OSError as exc:
            self._end(context, now, Outcome(RunStatus.CRASHED, f"the run could not be started: {exc}"))
            return
        if isinstance(run, ProcessRun) and run.pid is not None:
            self._s(lambda: self.store.set_pid(context.run_id, run.pid), None)  # type: ignore[arg-type]
        self.active[context.run_id] = _Active(run, now + max(0.0, lead))
        if lead > 0:
            # Not at the instant: a readable pipe would wake the loop, which then takes the CPU from
            # the job's first statements; the run itself looks whether it was released as late.
            self._watch_at[context.run_id] = now + lead + RELEASE_RECHECK
        else:
            self.watcher.watch(context.run_id, run.fds())

    def _announce(self, context: RunContext, started: float) -> None:
        """The run's `run_started` event, when its job begins (for a prepared run: when it is released)."""
        spec = self.jobs[context.job]
        extra: dict[str, object] = {"isolation": spec.isolation}
        scheduled = not self._foreground and context.run_id not in self._manual
        if scheduled:
            extra["lateness_ms"] = round(max(0.0, (started - context.slot.timestamp()) * 1000), 2)
        if context.run_id in self._caught_up:  # late by design: its slot passed while it could not run
            self._caught_up.discard(context.run_id)
            extra["catch_up"] = True
        self.lifecycle.emit(RunEvent(RunStatus.RUNNING, context, extra=extra, scheduled=scheduled))

    def _withdraw(self, context: RunContext) -> None:
        """A prepared run the stop kept from starting: its record goes and its claim expires, so
        another host, or this one at its next start, takes the slot over and runs it."""
        token = self._tokens.pop(context.run_id, None)
        self._release_at.pop(context.run_id, None)
        if context.run_id in self._lost_runs or token is None:  # taken over meanwhile: the taker's now
            self._lost_runs.discard(context.run_id)
            return
        done = self._s(lambda: self.store.withdraw(context.run_id, token), None)
        where = {"event": "run_withdrawn", "job": context.job, "run_id": context.run_id}
        if done:
            logger.info(
                "run %s was prepared for %s but not started: the host is stopping; the slot is left to "
                "the next host that looks",
                context.run_id,
                context.slot.isoformat(),
                extra=where,
            )
        else:  # out of reach: recorded running, it is looked at by the next start or taken over
            logger.warning(
                "run %s was prepared for %s but not started, and the state store could not be told: the next "
                "start (or another host, a lease later) settles the slot",
                context.run_id,
                context.slot.isoformat(),
                extra=where,
            )

    def _cancel_prepared(self) -> None:
        """Stopping: runs prepared for a slot still to come do not start (their process says so)."""
        for active in self.active.values():
            if _prepared(active.run) and isinstance(active.run, ProcessRun):
                self.watcher.release(active.run.cancel())
                if self._watch_at.pop(active.run.context.run_id, None) is not None:
                    self.watcher.watch(active.run.context.run_id, active.run.fds())

    def _finish(self, run_id: str) -> None:
        active = self.active.pop(run_id)
        self._watch_at.pop(run_id, None)
        self.watcher.release(active.run.fds())
        if isinstance(active.run, ProcessRun):
            self.watcher.release(active.run.held_fds())
            if active.run.cancelled:
                self._withdraw(active.run.context)
                return
        self._end(active.run.context, active.started_mono, active.run.outcome())
        queued = self.queued_overlap.get(active.run.spec.name)
        # A run asked for by hand may end while the scheduled one goes on: the queue waits for both.
        still = any(a.run.spec.name == active.run.spec.name for a in self.active.values())
        if queued and self._stop_signal is None and (active.run.spec.overlap == "allow" or not still):
            self.pending.append(queued.popleft())

    def _end(self, context: RunContext, started_mono: float, outcome: Outcome) -> None:
        duration_ms = max(0, int((self.monotonic() - started_mono) * 1000))  # 0: ended before its instant
        ended = self.clock()
        manual = context.run_id in self._manual
        self._manual.discard(context.run_id)
        retry_at = None if manual else self._next_attempt_due(context, outcome)
        retry = None
        if self._foreground:  # backfill waits for the attempt itself
            self.retry_at = retry_at = retry_at if self._foreground_retry else None
        elif retry_at is not None and self._retries is not None:
            retry = PendingRetry(retry_at, context.job, context.slot, context.attempt + 1)
        else:
            retry_at = None
        self._settle(
            Settlement(
                context.run_id,
                context.job,
                context.slot,
                context.attempt,
                outcome.status,
                outcome.reason,
                ended,
                duration_ms,
                retry,
            )
        )
        if retry is not None:
            self._add_retry(retry)
        self.lifecycle.emit(
            RunEvent(
                outcome.status,
                context,
                outcome.reason,
                duration_ms,
                outcome.traceback,
                retry_at=retry_at,
                exception=outcome.exception,
                scheduled=not self._foreground and not manual,
            )
        )
        if self.waiting:  # a run by hand that fails is no verdict on the slot: its own attempts may still succeed
            self._settle_waiting(context, outcome, final=retry_at is None and not manual)
        self._last_outcome = outcome

    def _settle(self, settlement: Settlement) -> None:
        """Write how an attempt ended and release its claim; kept to write later if the store is out of reach."""
        if settlement.run_id in self._lost_runs:
            self._lost_runs.discard(settlement.run_id)
            self._discarded(settlement)
            return
        self._write(settlement, self._tokens.pop(settlement.run_id, None))

    def _settle_unstarted(self, context: RunContext, status: RunStatus, reason: str) -> None:
        self._settle(
            Settlement(context.run_id, context.job, context.slot, context.attempt, status, reason, self.clock())
        )

    def _write(self, settlement: Settlement, token: int | None) -> bool:
        """One settlement; False if it must wait for the store."""
        written = self._s(lambda: self.store.settle(settlement, token), None)
        if written is None:  # out of reach (or failing): kept, its claim renewed, written later
            self._unsent.append((settlement, token))
            return False
        if written is False:
            self._discarded(settlement)
        elif self.config.results_dir is not None:
            (self.config.results_dir / f"{settlement.run_id}.json").unlink(missing_ok=True)
        return True

    def _discarded(self, settlement: Settlement) -> None:
        logger.warning(
            "the result of run %s (%s) was not recorded: another host took the run over while this "
            "host was cut off, and its record stands",
            settlement.run_id,
            settlement.status,
            extra={"event": "run_result_discarded", "lost_run_id": settlement.run_id},
        )
        if self.config.results_dir is not None:
            (self.config.results_dir / f"{settlement.run_id}.json").unlink(missing_ok=True)

    def _flush_unsent(self) -> None:
        """Write the ends kept while the store was out of reach, oldest first (fenced like any other)."""
        unsent, self._unsent = self._unsent, []
        for index, (settlement, token) in enumerate(unsent):
            if not self._write(settlement, token):
                self._unsent.extend(unsent[index + 1 :])
                return

    def _record(self, context: RunContext, status: RunStatus, reason: str = "", **times: dt.datetime) -> RunRecord:
        return RunRecord(
            context.run_id,
            context.job,
            context.slot,
            context.attempt,
            status,
            reason,
            host=self.config.hostname,
            **times,
        )

    def _record_unstarted(
        self,
        context: RunContext,
        status: RunStatus,
        reason: str,
        batch: tuple[int, int] | None = None,
        **extra: object,
    ) -> None:
        """Record a slot that does not run (skipped, missed, blocked, interrupted) under its claim,
        or claimed with the record; a host that loses the claim records nothing."""
        self._release_at.pop(context.run_id, None)
        self._caught_up.discard(context.run_id)
        record = self._record(context, status, reason, ended=self.clock())
        record.paused = extra.get("paused") is True  # a paused skip settles nothing: data in the store
        token = self._tokens.pop(context.run_id, None)
        if token is None:
            recorded = self._s(lambda: self.store.claim_and_record(record), False)
        else:
            recorded = self._s(lambda: self.store.record_unstarted(record, token), False)
        if recorded:
            self.lifecycle.emit(RunEvent(status, context, reason, extra=dict(extra), batch=batch))

    # -- stopping ---------------------------------------------------------

    def _handle_signals(self) -> None:
        while self.watcher.signals:
            signum = self.watcher.signals.pop(0)
            if self._stop_signal is None and self._foreground:
                self._stop_signal = signum
                self._stop_deadline = self.monotonic()
                logger.info("%s: stopping the run", signal_name(signum), extra={"event": "host_stopping"})
            elif self._stop_signal is None:
                self._stop_signal = signum
                self._stop_deadline = self.monotonic() + self.config.stop_grace
                self._tell()
                self._cancel_prepared()
                logger.info(
                    "%s: starting nothing new; %d runs in flight get %s to finish",
                    signal_name(signum),
                    len(self.active),
                    format_duration(self.config.stop_grace),
                    extra={"event": "host_stopping", "signal": signal_name(signum), "runs_in_flight": len(self.active)},
                )
            else:
                logger.warning("second %s: stopping now", signal_name(signum), extra={"event": "host_stopping_now"})
                self._stop_runs(at_once=True)

    def _stop_runs(self, *, at_once: bool) -> None:
        name = signal_name(self._stop_signal or signal.SIGTERM)
        if at_once:
            reason = f"the host was stopped ({name} twice); the run was killed"
        elif self._foreground:
            reason = f"stopped by {name}"
        else:
            grace = format_duration(self.config.stop_grace)
            reason = f"the host was stopped ({name}); the run was killed after the {grace} stop grace"
        now = self.monotonic()
        for active in self.active.values():
            if at_once or not active.stop_requested:
                active.stop_requested = True
                active.run.stop(Outcome(RunStatus.INTERRUPTED, reason), now, at_once=at_once)
        self._stop_deadline = None

    def _abandon_pending(self) -> None:
        self.pending.extend(self._stalled)
        self.pending.extend(self.behind_remote.values())
        with self._requests_open:
            self._requests_closed = True
        while self._requested:
            self._take_request(self._requested.popleft())
        while self.pending:
            context = self.pending.popleft()
            reason = "the host stopped before a worker was free"
            if context.run_id in self._manual:  # not claimed: recorded as `run` records one
                self._manual.discard(context.run_id)
                record = self._record(context, RunStatus.INTERRUPTED, reason, ended=self.clock())
                if self._s(lambda r=record: self.store.add_run(r), False) is not False:
                    self.lifecycle.emit(RunEvent(RunStatus.INTERRUPTED, context, reason, scheduled=False))
                continue
            self._record_unstarted(context, RunStatus.INTERRUPTED, reason)
        for queued in self.queued_overlap.values():
            while queued:
                self._record_unstarted(
                    queued.popleft(), RunStatus.INTERRUPTED, "the host stopped before the run could start"
                )

    # -- the store must not take the loop down ----------------------------
