"""Every store write of an attempt and the event that follows it, in one place, under one rule.

The rule: an attempt that did not run is announced only if its record was written (a
host that lost the claim says nothing: the slot is another host's). An attempt that ran
is always announced: its lines and its end happened here, whether or not the store
kept its result (a lost claim's result is discarded, and says so).

`StoreCalls` is the one seam to the store: a failing store is logged, the loop goes on,
and the loop hears when an outage begins and ends.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from jobhost.clock import Clock
from jobhost.config import HostConfig
from jobhost.context import RunContext
from jobhost.engine.attempt import Attempt
from jobhost.engine.leases import Leases
from jobhost.engine.storelink import StoreLink
from jobhost.observe.events import Lifecycle, RunEvent
from jobhost.outcomes import Outcome, RunStatus
from jobhost.store import RunRecord, StateStore
from jobhost.store.model import PendingRetry, Settlement

logger = logging.getLogger("jobhost.host")

T = TypeVar("T")
PRUNE_BATCH = 500  # runs deleted at most per heartbeat
PRUNE_EVERY = 3600.0  # seconds between two prunes when the last one left nothing behind


def _nothing(*_: object) -> None:
    return None


def settlement_of(
    attempt: Attempt, outcome: Outcome, ended: dt.datetime, duration_ms: int, retry: PendingRetry | None
) -> Settlement:
    """The store's record of how an attempt that ran ended."""
    return Settlement(
        attempt.run_id,
        attempt.job,
        attempt.slot,
        attempt.number,
        outcome.status,
        outcome.reason,
        ended,
        duration_ms,
        retry,
    )


def ended_event(
    attempt: Attempt, outcome: Outcome, duration_ms: int, retry_at: dt.datetime | None, *, scheduled: bool
) -> RunEvent:
    """What the reporters hear when an attempt that ran has ended."""
    return RunEvent(
        outcome.status,
        attempt.context,
        outcome.reason,
        duration_ms,
        outcome.traceback,
        retry_at=retry_at,
        exception=outcome.exception,
        scheduled=scheduled,
    )


class StoreCalls:
    """Calls the store through the link; the loop is told when an outage begins (`on_down`, with
    the instant from which what fell due is owed), ends (`on_up`), or its failure changes."""

    def __init__(self, store: StateStore, link: StoreLink, clock: Clock, monotonic: Callable[[], float]):
        self.store = store
        self.link = link
        self.clock = clock
        self.monotonic = monotonic
        self.on_down: Callable[[dt.datetime], None] = _nothing
        self.on_up: Callable[[], None] = _nothing
        self.on_failure: Callable[[], object] = _nothing
        self._told_failure: str | None = None

    @property
    def up(self) -> bool:
        return self.link.up

    def __call__(self, call: Callable[[], T], fallback: Any) -> T:
        was_up = self.link.up
        value = self.link.call(call, fallback)
        if was_up and not self.link.up:  # an outage begins: what fell due from the last call that worked is owed
            self.on_down(self.clock() - dt.timedelta(seconds=self.monotonic() - self.link.last_ok + 1))
        elif not was_up and self.link.up:  # it ends: the tick that catches up comes at once, not a lease later
            self.on_up()
        if self.link.failure != self._told_failure:
            self.on_failure()
        return value

    def told(self) -> str | None:
        """The store's failure now, as the status is about to say it."""
        self._told_failure = self.link.failure
        return self._told_failure


class Recorder:
    """Writes what becomes of each attempt, fenced by its claim, and emits its event."""

    def __init__(
        self,
        calls: StoreCalls,
        leases: Leases,
        lifecycle: Lifecycle,
        config: HostConfig,
        clock: Clock,
        monotonic: Callable[[], float],
    ):
        self.call = calls
        self.store = calls.store
        self.leases = leases
        self.lifecycle = lifecycle
        self.config = config
        self.clock = clock
        self.monotonic = monotonic
        self.unsent: list[tuple[Settlement, int | None]] = []  # ends not yet written (store unreachable)
        self.next_prune = 0.0

    def result_file(self, context: RunContext) -> Path | None:
        """Where a run's process leaves its outcome, in case the host cannot hear it."""
        return None if self.config.results_dir is None else self.config.results_dir / f"{context.run_id}.json"

    def record(
        self,
        attempt: Attempt,
        status: RunStatus,
        reason: str = "",
        *,
        started: dt.datetime | None = None,
        ended: dt.datetime | None = None,
    ) -> RunRecord:
        return attempt.record(status, self.config.hostname, reason, started=started, ended=ended)

    # -- attempts that do not run ----------------------------------------

    def unstarted(
        self,
        attempt: Attempt,
        status: RunStatus,
        reason: str,
        batch: tuple[int, int] | None = None,
        **extra: object,
    ) -> None:
        """Record a slot that does not run (skipped, missed, blocked, interrupted) under its claim,
        or claimed with the record; a host that loses the claim records nothing. A slot skipped
        because its job is paused (`paused=True`) is recorded so: it settles nothing."""
        record = attempt.record(
            status, self.config.hostname, reason, ended=self.clock(), paused=extra.get("paused") is True
        )
        token = self.leases.let_go(attempt)
        if token is None:
            recorded = self.call(lambda: self.store.claim_and_record(record), False)
        else:
            recorded = self.call(lambda: self.store.record_unstarted(record, token), False)
        if recorded:
            self.lifecycle.emit(RunEvent(status, attempt.context, reason, extra=dict(extra), batch=batch))

    def unclaimed(self, attempt: Attempt, status: RunStatus, reason: str) -> None:
        """Record an attempt asked for by hand that does not run: never claimed, as `run` records one."""
        record = self.record(attempt, status, reason, ended=self.clock())
        if self.call(lambda: self.store.add_run(record), False) is not False:
            self.lifecycle.emit(RunEvent(status, attempt.context, reason, scheduled=False))

    def waits(self, attempt: Attempt, reason: str) -> bool:
        """Record that a child slot waits for its parents; False if the claim was lost meanwhile."""
        record = self.record(attempt, RunStatus.WAITING, reason)
        if self.call(lambda: self.store.start_run(record, attempt.token), None) is False:
            self.leases.let_go(attempt)
            return False
        self.lifecycle.emit(RunEvent(RunStatus.WAITING, attempt.context, reason))
        return True

    def stops_waiting(self, attempt: Attempt, reason: str) -> None:
        """Close a waiting record (its parents succeeded: the run that follows has a record of its own)."""
        self.call(lambda: self.store.finish_run(attempt.run_id, RunStatus.WAITING, reason, self.clock(), None), None)

    def blocked(self, attempt: Attempt, reason: str) -> None:
        """A waiting child slot whose parent ended for good without success: settled, and said."""
        self.settle_unstarted(attempt, RunStatus.WAITING, reason)
        self.lifecycle.emit(RunEvent(RunStatus.WAITING, attempt.context, reason, extra={"blocked": True}))

    def settle_cancelled(self, attempt: Attempt, reason: str) -> None:
        """An attempt a person cancelled that no run of this host ends: one waiting for its parents, or
        one taken over from a host that died before it could stop it. Settled so, and said."""
        self.settle_unstarted(attempt, RunStatus.CANCELLED, reason)
        self.lifecycle.emit(RunEvent(RunStatus.CANCELLED, attempt.context, reason))

    def settle_unstarted(self, attempt: Attempt, status: RunStatus, reason: str) -> None:
        settlement = Settlement(attempt.run_id, attempt.job, attempt.slot, attempt.number, status, reason, self.clock())
        self.settle(settlement, attempt)

    def abandoned(
        self, attempt: Attempt, reason: str, now: dt.datetime, retry: PendingRetry | None, *, previous_host: str
    ) -> None:
        """An attempt taken over from a host that stopped renewing it mid-run: settled abandoned
        (with the retry it leaves, if any), then announced."""
        self.settle(
            Settlement(
                attempt.run_id, attempt.job, attempt.slot, attempt.number, RunStatus.ABANDONED, reason, now, retry=retry
            ),
            attempt,
        )
        self.lifecycle.emit(
            RunEvent(
                RunStatus.ABANDONED,
                attempt.context,
                reason,
                retry_at=None if retry is None else retry.due,
                extra={"previous_host": previous_host},
            )
        )

    def withdraw(self, attempt: Attempt) -> None:
        """A prepared run the stop kept from starting: its record goes and its claim expires, so
        another host, or this one at its next start, takes the slot over and runs it."""
        token = self.leases.let_go(attempt)
        if attempt.lost or token is None:  # taken over meanwhile: the taker's now
            return
        done = self.call(lambda: self.store.withdraw(attempt.run_id, token), None)
        where = {"event": "run_withdrawn", "job": attempt.job, "run_id": attempt.run_id}
        if done:
            logger.info(
                "run %s was prepared for %s but not started: the host is stopping; the slot is left to "
                "the next host that looks",
                attempt.run_id,
                attempt.slot.isoformat(),
                extra=where,
            )
        else:  # out of reach: recorded running, it is looked at by the next start or taken over
            logger.warning(
                "run %s was prepared for %s but not started, and the state store could not be told: the next "
                "start (or another host, a lease later) settles the slot",
                attempt.run_id,
                attempt.slot.isoformat(),
                extra=where,
            )

    # -- attempts that run -----------------------------------------------

    def starts(self, record: RunRecord, attempt: Attempt) -> bool | None:
        """Record the start under the claim: True, False if the claim was lost, None if the store failed."""
        return self.call(lambda: self.store.start_run(record, attempt.token), None)

    def pid(self, attempt: Attempt, pid: int) -> None:
        self.call(lambda: self.store.set_pid(attempt.run_id, pid), None)

    def started(self, attempt: Attempt, at: float, *, scheduled: bool, isolation: str) -> None:
        """The run's `run_started` event, when its job begins (for a prepared run: when it is released)."""
        extra: dict[str, object] = {"isolation": isolation}
        if scheduled:
            extra["lateness_ms"] = round(max(0.0, (at - attempt.slot.timestamp()) * 1000), 2)
        if attempt.catch_up:  # late by design: its slot passed while it could not run
            attempt.catch_up = False
            extra["catch_up"] = True
        self.lifecycle.emit(RunEvent(RunStatus.RUNNING, attempt.context, extra=extra, scheduled=scheduled))

    def ended(
        self,
        attempt: Attempt,
        outcome: Outcome,
        duration_ms: int,
        retry: PendingRetry | None = None,
        *,
        retry_at: dt.datetime | None,
        scheduled: bool,
    ) -> None:
        """How an attempt that ran ended: written (with the retry it leaves, if any), then announced."""
        self.settle(settlement_of(attempt, outcome, self.clock(), duration_ms, retry), attempt)
        self.lifecycle.emit(ended_event(attempt, outcome, duration_ms, retry_at, scheduled=scheduled))

    # -- the writes ------------------------------------------------------

    def settle(self, settlement: Settlement, attempt: Attempt) -> None:
        """Write how an attempt ended and release its claim; kept to write later if the store is out of reach."""
        token = self.leases.let_go(attempt)
        if attempt.lost:
            self._discarded(settlement)
            return
        self._write(settlement, token)

    def _write(self, settlement: Settlement, token: int | None) -> bool:
        """One settlement; False if it must wait for the store."""
        written = self.call(lambda: self.store.settle(settlement, token), None)
        if written is None:  # out of reach (or failing): kept, its claim renewed, written later
            self.unsent.append((settlement, token))
            return False
        if written is False:
            self._discarded(settlement)
        else:
            self._forget_result(settlement.run_id)
        return True

    def _discarded(self, settlement: Settlement) -> None:
        logger.warning(
            "the result of run %s (%s) was not recorded: another host took the run over while this "
            "host was cut off, and its record stands",
            settlement.run_id,
            settlement.status,
            extra={"event": "run_result_discarded", "lost_run_id": settlement.run_id},
        )
        self._forget_result(settlement.run_id)

    def _forget_result(self, run_id: str) -> None:
        if self.config.results_dir is not None:
            (self.config.results_dir / f"{run_id}.json").unlink(missing_ok=True)

    def flush(self) -> None:
        """Write the ends kept while the store was out of reach, oldest first (fenced like any other)."""
        unsent, self.unsent = self.unsent, []
        for index, (settlement, token) in enumerate(unsent):
            if not self._write(settlement, token):
                self.unsent.extend(unsent[index + 1 :])
                return

    def unsent_tokens(self) -> list[int]:
        return [token for _, token in self.unsent if token is not None]

    # -- the host's own records ------------------------------------------

    def beat(self, *, stopped: bool = False) -> None:
        """The loop's sign of life in the store, for `health`."""
        self.call(lambda: self.store.beat(self.config.hostname, os.getpid(), self.clock(), stopped=stopped), None)

    def prune(self) -> None:
        """Forget runs older than history_days, one small batch a heartbeat while some are left (so
        the loop never stalls), then once every PRUNE_EVERY (an idle host wakes for little else)."""
        if self.monotonic() < self.next_prune:
            return
        before = self.clock() - dt.timedelta(days=self.config.history_days)
        removed = self.call(lambda: self.store.prune(before, PRUNE_BATCH), 0)
        self.next_prune = self.monotonic() + (0 if removed == PRUNE_BATCH else PRUNE_EVERY)
        if removed:
            logger.info(
                "pruned %d runs older than %g days",
                removed,
                self.config.history_days,
                extra={"event": "history_pruned", "runs": removed},
            )
