"""The host loop: sleep until the next slot, dispatch due runs, watch the runs in flight.

One thread does it all with a selector over the runs' pipes, their pidfds and
a signal wake-up pipe, so forking is safe and nothing blocks the loop. Signal
handlers only record the signal; the loop acts on it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from jobhost.catchup import plan_catchup
from jobhost.clock import Clock
from jobhost.clock import now as wall_now
from jobhost.context import RunContext
from jobhost.dependencies import describe, unmet
from jobhost.durations import format_duration
from jobhost.exits import signal_name
from jobhost.lifecycle import Lifecycle, RunEvent, log_output, log_record
from jobhost.outcomes import Outcome, RunStatus
from jobhost.processrun import ProcessRun
from jobhost.recovery import WAITED, guard, recover
from jobhost.registry import JobSpec
from jobhost.retries import PendingRetry, RetryQueue, backoff
from jobhost.run import Run
from jobhost.slotqueue import SlotQueue
from jobhost.store import RunRecord, StateStore
from jobhost.threadrun import RoutedStdout, ThreadRun
from jobhost.watcher import Watcher

logger = logging.getLogger("jobhost.host")

POLL_INTERVAL = 0.2
PRUNE_BATCH = 500  # runs deleted at most per heartbeat
# Outcomes worth another attempt. An interrupted or abandoned slot is not retried but
# caught up at the next start (it is not settled), so it never runs twice.
RETRYABLE = frozenset(
    {RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CRASHED}
)  # seconds, only where a child's exit cannot be watched with a pidfd


@dataclass(frozen=True)
class HostConfig:
    """What the deployment tells the engine (read from settings by configuration/)."""

    max_workers: int = 4
    stop_grace: float = 30.0
    hostname: str = field(default_factory=socket.gethostname)
    heartbeat_interval: float = 30.0  # the loop records a heartbeat this often, and sleeps no longer
    # Turn descriptors 1 and 2 into a pipe the loop reads, so that output no run
    # captures (a thread job's subprocess, native code) becomes log lines too. Only
    # when the log handler writes through a descriptor of its own.
    capture_stray_output: bool = False
    history_days: float = 90.0  # run history older than this is pruned, a batch at a time
    # Where each run's process leaves its outcome until the host has recorded it, so a
    # host killed between reaping a run and recording it loses nothing (None: not kept).
    results_dir: Path | None = None


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
        self.watcher = Watcher()
        self._stop_signal: int | None = None
        self._stop_deadline: float | None = None
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
        """Run until SIGTERM or SIGINT; return the exit status (0)."""
        self._prepare()
        now = self.clock()
        recover(self.store, self.lifecycle, self.config.hostname, self._result_file, now)
        self._beat()
        queue = SlotQueue({name: spec.schedule for name, spec in self.jobs.items()}, now)
        self._retries = RetryQueue(guard(self.store.pending_retries, []))
        settled = guard(self.store.settled_slots, {})
        for name, spec in self.jobs.items():
            if name in settled:  # a job seen before: what did it miss while the host was down?
                self._catch_up(spec, settled[name], now)
        logger.info(
            "host started: %d jobs, %d workers",
            len(self.jobs),
            self.config.max_workers,
            extra={"event": "host_started", "jobs": len(self.jobs), "max_workers": self.config.max_workers},
        )
        while True:
            if self._stop_signal is None:
                now = self.clock()
                for due in queue.pop_due(now):
                    spec = self.jobs[due.name]
                    if due.first < due.slot:  # the loop woke late: several slots passed
                        self._catch_up(spec, due.first.astimezone(dt.UTC) - dt.timedelta(microseconds=1), now)
                    else:
                        self._dispatch(spec, due.slot)
                for retry in self._retries.pop_due(now):
                    self._dispatch_retry(retry)
                self._start_pending()
            elif not self.active:
                break
            upcoming = [t for t in (queue.next_due(), self._retries.next_due()) if t is not None]
            self._turn(self._sleep_seconds(min(upcoming, default=None)))
            if self.monotonic() >= self._next_beat:
                self._beat()
                self._prune_history()
                self._catch_up_resumed()
        self._abandon_pending()
        for context in self.waiting:
            self._close_waiting(context, WAITED)
        self.watcher.finish()
        self._beat(stopped=True)
        self.close()
        logger.info("host stopped", extra={"event": "host_stopped"})
        return 0

    def close(self) -> None:
        """Let the reporters send what they still hold (bounded in time); after `run_now` too."""
        self.lifecycle.close()

    def run_now(self, spec: JobSpec, slot: dt.datetime, attempt: int = 1, *, retry: bool = False) -> Outcome:
        """One run in the foreground (`run`, `backfill`), wrapped like any other.

        With `retry`, a failed attempt that has attempts left sets `retry_at` (the caller
        waits and runs the next one), and is logged and reported as retried, not as final.
        A signal (Ctrl-C) stops the run at once rather than after the stop grace.
        """
        if not self._foreground:
            self._prepare()
            self._foreground = True
        self._last_outcome = None
        self._foreground_retry = retry
        self.retry_at = None
        self._start(self._context(spec, slot, attempt))
        while self.active:
            self._turn(self._sleep_seconds(None))
        return self._last_outcome or Outcome(RunStatus.CRASHED, "the run did not start")

    def pause(self, seconds: float) -> bool:
        """Wait in the foreground (between backfill attempts); False if a signal asked to stop."""
        deadline = self.monotonic() + seconds
        while not self.stopping and (left := deadline - self.monotonic()) > 0:
            self._turn(left)
        return not self.stopping

    @property
    def stopping(self) -> bool:
        """True once SIGTERM or SIGINT has been received."""
        self._handle_signals()
        return self._stop_signal is not None

    _foreground = False
    _foreground_retry = False
    _last_outcome: Outcome | None = None
    retry_at: dt.datetime | None = None  # when the foreground run's next attempt is due, if it has one

    # -- one turn of the loop --------------------------------------------

    def _turn(self, timeout: float) -> None:
        for run_id, fd in self.watcher.wait(timeout):
            if run_id in self.active:
                self.watcher.release(self.active[run_id].run.on_readable(fd, self.monotonic()))
        self._handle_signals()
        now = self.monotonic()
        if self._stop_deadline is not None and now >= self._stop_deadline:
            self._stop_runs(at_once=False)
        for run_id, active in list(self.active.items()):
            self.watcher.release(active.run.poll(now))
            if active.run.done:
                self._finish(run_id)

    def _beat(self, *, stopped: bool = False) -> None:
        """The loop's sign of life, for `health` (written at least every heartbeat_interval)."""
        self._next_beat = self.monotonic() + self.config.heartbeat_interval
        guard(lambda: self.store.beat(self.config.hostname, os.getpid(), self.clock(), stopped=stopped), None)
        if not stopped:
            self.lifecycle.beat()

    _next_beat = float("inf")

    _paused: set[str] | None = None

    def _catch_up_resumed(self) -> None:
        """A job resumed since the last heartbeat gets its catch-up for the slots skipped while paused."""
        paused = guard(self.store.paused_jobs, None)
        if paused is None:
            return
        resumed = (self._paused or set()) - paused
        self._paused = paused
        if resumed:
            now, settled = self.clock(), guard(self.store.settled_slots, {})
            for name in sorted(resumed & set(settled) & set(self.jobs)):
                spec = self.jobs[name]
                self._catch_up(spec, settled[name], now, after_pause=True)

    def _prune_history(self) -> None:
        """Forget runs older than history_days, one small batch a heartbeat, so the loop never stalls."""
        before = self.clock() - dt.timedelta(days=self.config.history_days)
        removed = guard(lambda: self.store.prune(before, PRUNE_BATCH), 0)
        if removed:
            logger.info(
                "pruned %d runs older than %g days",
                removed,
                self.config.history_days,
                extra={"event": "history_pruned", "runs": removed},
            )

    def _sleep_seconds(self, next_slot: dt.datetime | None) -> float:
        limits = [self.config.heartbeat_interval, self._next_beat - self.monotonic()]
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
        if self.pending and len(self.active) < self.config.max_workers:
            limits.append(0)
        return max(0.0, min(limits))

    # -- dispatching ------------------------------------------------------

    def _context(self, spec: JobSpec, slot: dt.datetime, attempt: int = 1) -> RunContext:
        return RunContext(spec.name, uuid.uuid4().hex, slot.astimezone(spec.schedule.zone), attempt)

    def _dispatch(self, spec: JobSpec, slot: dt.datetime) -> None:
        context = self._context(spec, slot)
        if spec.name in guard(self.store.paused_jobs, set()):
            self._record_unstarted(context, RunStatus.SKIPPED, "paused", paused=True)
            return
        if spec.after and (missing := guard(lambda: unmet(spec, slot, self.jobs, self.store), [])):
            self._wait(context, missing, self._finally_failed(missing))
            return
        in_flight = [a.run.context.run_id for a in self.active.values() if a.run.spec.name == spec.name]
        in_flight += [c.run_id for c in self.pending if c.job == spec.name]
        if in_flight and spec.overlap == "skip":
            other_id = in_flight[0]
            self._record_unstarted(
                context, RunStatus.SKIPPED, f"the previous run {other_id} was still going", collided_with=other_id
            )
            return
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
            return
        self.pending.append(context)

    def _dispatch_retry(self, retry: PendingRetry) -> None:
        spec = self.jobs.get(retry.job)
        if spec is None:  # the job is gone from jobs/
            guard(lambda: self.store.drop_retry(retry.job, retry.slot), None)
            return
        context = self._context(spec, retry.slot, retry.attempt)
        if any(a.run.spec.name == spec.name for a in self.active.values()):
            self.queued_overlap.setdefault(spec.name, deque()).append(context)  # after the run going on
        else:
            self.pending.append(context)

    def _schedule_retry(self, context: RunContext, outcome: Outcome) -> dt.datetime | None:
        """If the slot has attempts left, keep the next one (in the store too) and return when it is due."""
        spec = self.jobs.get(context.job)
        if context.attempt > 1 and outcome.status not in (RunStatus.INTERRUPTED, RunStatus.ABANDONED):
            # This attempt has ended for good; an interrupted one stays pending for the next start.
            guard(lambda: self.store.drop_retry(context.job, context.slot), None)
        if (
            spec is None
            or outcome.status not in RETRYABLE
            or context.attempt > spec.retries
            or self._stop_signal is not None
        ):
            return None
        due = self.clock() + dt.timedelta(seconds=backoff(spec.retry_delay, context.attempt))
        if self._foreground:  # backfill waits for the attempt itself
            self.retry_at = due if self._foreground_retry else None
            return self.retry_at
        if self._retries is None:
            return None
        retry = PendingRetry(due, context.job, context.slot, context.attempt + 1)
        guard(lambda: self.store.add_retry(retry), None)
        self._retries.add(retry)
        return due

    _retries: RetryQueue | None = None

    def _wait(self, context: RunContext, missing: list[tuple[str, dt.datetime]], failed: str | None) -> None:
        """Hold a child slot until its parents' slots succeed, or record it blocked if one never will."""
        if failed is not None:
            reason = f"blocked: {failed}"
            record = self._record(context, RunStatus.WAITING, reason, ended=self.clock())
            guard(lambda: self.store.add_run(record), None)
            self.lifecycle.emit(RunEvent(RunStatus.WAITING, context, reason, extra={"blocked": True}))
            return
        reason = f"waiting for {describe(missing)} to succeed"
        guard(lambda: self.store.add_run(self._record(context, RunStatus.WAITING, reason)), None)
        self.lifecycle.emit(RunEvent(RunStatus.WAITING, context, reason))
        self.waiting.append(context)

    def _finally_failed(self, missing: list[tuple[str, dt.datetime]]) -> str | None:
        """Which parent slot has ended for good without success (no retry pending), in words."""
        pending = {(r.job, r.slot.timestamp()) for r in guard(self.store.pending_retries, [])}
        for parent, parent_slot in missing:
            status = guard(lambda p=parent, s=parent_slot: self.store.final_status(p, s), None)
            if status is not None and (parent, parent_slot.timestamp()) not in pending:
                return f"{parent} {status} for slot {parent_slot.isoformat()}"
        return None

    def _settle_waiting(self, parent: RunContext, outcome: Outcome, final: bool) -> None:
        """After a parent's attempt: release the children it unblocked, report those it blocked."""
        for context in list(self.waiting):
            spec = self.jobs[context.job]
            if parent.job not in spec.after:
                continue
            missing = guard(lambda s=spec, c=context: unmet(s, c.slot, self.jobs, self.store), [])
            if not missing:
                self.waiting.remove(context)
                self._close_waiting(context, "released: the jobs it comes after succeeded")
                self._dispatch(spec, context.slot)
            elif final and (parent.job, parent.slot) in missing and outcome.status != RunStatus.SUCCEEDED:
                self.waiting.remove(context)
                reason = f"blocked: {parent.job} {outcome.status} for slot {parent.slot.isoformat()} ({outcome.reason})"
                self._close_waiting(context, reason)
                self.lifecycle.emit(RunEvent(RunStatus.WAITING, context, reason, extra={"blocked": True}))

    def _close_waiting(self, context: RunContext, reason: str) -> None:
        guard(lambda: self.store.finish_run(context.run_id, RunStatus.WAITING, reason, self.clock(), None), None)

    def _catch_up(self, spec: JobSpec, after: dt.datetime, now: dt.datetime, *, after_pause: bool = False) -> None:
        """Slots after `after` up to `now`, by the job's policy: record those given up as missed,
        run the others one after another. `after_pause`: the job was paused, on purpose."""
        plan = plan_catchup(spec.schedule, after, now, spec.catchup, spec.catchup_window)
        # Slots before `after` that never settled (a later slot did): interrupted, paused, ...
        since = now - dt.timedelta(seconds=spec.catchup_window)
        orphans = guard(lambda: self.store.unsettled_slots(spec.name, since, after), [])
        if orphans and spec.catchup == "all":
            plan.run = orphans + plan.run
        elif orphans:
            why = "superseded: a later slot has run" if spec.catchup == "latest" else 'the job has catchup="none"'
            plan.missed.extend((slot, why) for slot in orphans)
        for index, (slot, reason) in enumerate(plan.missed):
            batch = (index, len(plan.missed))
            extra = {"after_pause": True} if after_pause else {}
            self._record_unstarted(self._context(spec, slot), RunStatus.MISSED, reason, batch=batch, **extra)
        if spec.name in guard(self.store.paused_jobs, set()):
            for slot in plan.run:
                self._record_unstarted(self._context(spec, slot), RunStatus.SKIPPED, "paused", paused=True)
        elif plan.run:
            self._dispatch(spec, plan.run[0])
            backlog = self.queued_overlap.setdefault(spec.name, deque())
            backlog.extend(self._context(spec, slot) for slot in plan.run[1:])

    def _start_pending(self) -> None:
        while self.pending and len(self.active) < self.config.max_workers:
            self._start(self.pending.popleft())

    def _start(self, context: RunContext) -> None:
        spec = self.jobs[context.job]
        started = self.clock()
        record = self._record(context, RunStatus.RUNNING, started=started)
        guard(lambda: self.store.add_run(record), None)
        extra: dict[str, object] = {"isolation": spec.isolation}
        if not self._foreground:
            extra["lateness_ms"] = max(0, int((started - context.slot).total_seconds() * 1000))
        self.lifecycle.emit(RunEvent(RunStatus.RUNNING, context, extra=extra, scheduled=not self._foreground))
        run: Run
        if spec.isolation == "thread":
            run = ThreadRun(spec, context, log_output, log_record, self.lifecycle)
        else:
            result_file = self._result_file(context)
            run = ProcessRun(spec, context, log_output, log_record, self.watcher.child_fds, result_file, self.lifecycle)
        now = self.monotonic()
        try:
            run.start(now)
        except OSError as exc:
            self._end(context, now, Outcome(RunStatus.CRASHED, f"the run could not be started: {exc}"))
            return
        if run.pid is not None:
            guard(lambda: self.store.set_pid(context.run_id, run.pid), None)  # type: ignore[arg-type]
        self.active[context.run_id] = _Active(run, now)
        self.watcher.watch(context.run_id, run.fds())

    def _finish(self, run_id: str) -> None:
        active = self.active.pop(run_id)
        self.watcher.release(active.run.fds())
        self._end(active.run.context, active.started_mono, active.run.outcome())
        queued = self.queued_overlap.get(active.run.spec.name)
        if queued and self._stop_signal is None:
            self.pending.append(queued.popleft())

    def _end(self, context: RunContext, started_mono: float, outcome: Outcome) -> None:
        duration_ms = int((self.monotonic() - started_mono) * 1000)
        ended = self.clock()
        guard(lambda: self.store.finish_run(context.run_id, outcome.status, outcome.reason, ended, duration_ms), None)
        if (result_file := self._result_file(context)) is not None:
            result_file.unlink(missing_ok=True)
        retry_at = self._schedule_retry(context, outcome)
        self.lifecycle.emit(
            RunEvent(
                outcome.status,
                context,
                outcome.reason,
                duration_ms,
                outcome.traceback,
                retry_at=retry_at,
                exception=outcome.exception,
                scheduled=not self._foreground,
            )
        )
        if self.waiting:
            self._settle_waiting(context, outcome, final=retry_at is None)
        self._last_outcome = outcome

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
        record = self._record(context, status, reason, ended=self.clock())
        guard(lambda: self.store.add_run(record), None)
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
        while self.pending:
            context = self.pending.popleft()
            self._record_unstarted(context, RunStatus.INTERRUPTED, "the host stopped before a worker was free")
        for queued in self.queued_overlap.values():
            while queued:
                self._record_unstarted(
                    queued.popleft(), RunStatus.INTERRUPTED, "the host stopped before the run could start"
                )

    # -- the store must not take the loop down ----------------------------
