"""Retries: when the next attempt of a failed slot is due, and the queue of pending ones.

`backoff` and `RetryQueue` are pure: the caller passes the time and the random source, so
they are testable. Pending retries are also kept in the state store, so a restart does
not lose them; `Retries` is the loop's part that keeps the two in step.
"""

from __future__ import annotations

import datetime as dt
import heapq
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING

from jobhost.store.model import PendingRetry

if TYPE_CHECKING:
    from jobhost.definition.spec import JobSpec
    from jobhost.engine.recorder import StoreCalls
    from jobhost.outcomes import Outcome
    from jobhost.store import StateStore

MAX_DELAY = 6 * 3600.0  # no attempt waits longer than this, whatever the backoff says
JITTER = 0.2  # each delay is spread by up to ±20 % so retries of many jobs do not stampede


def backoff(retry_delay: float, failed_attempt: int, rng: random.Random | None = None) -> float:
    """Seconds before the attempt after `failed_attempt` (1-based): retry_delay doubled each time, ±20 %."""
    base = min(retry_delay * 2 ** (failed_attempt - 1), MAX_DELAY)
    spread = (rng or random).uniform(1 - JITTER, 1 + JITTER)
    return min(base * spread, MAX_DELAY)


class RetryQueue:
    """Pending retries, earliest first."""

    def __init__(self, pending: list[PendingRetry] | None = None):
        self._heap = list(pending or [])
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[PendingRetry]:
        return iter(list(self._heap))

    def add(self, retry: PendingRetry) -> None:
        heapq.heappush(self._heap, retry)

    def next_due(self) -> dt.datetime | None:
        return self._heap[0].due if self._heap else None

    def pop_due(self, now: dt.datetime) -> list[PendingRetry]:
        due = []
        while self._heap and self._heap[0].due <= now:
            due.append(heapq.heappop(self._heap))
        return due


def retry_due(
    spec: JobSpec | None,
    attempt: int,
    outcome: Outcome,
    slot: dt.datetime,
    now: dt.datetime,
    *,
    stopping: bool,
    first: int = 1,
) -> dt.datetime | None:
    """When the slot's next attempt is due after `attempt` ended with `outcome`, if it has one.

    The one rule: an attempt that failed, timed out or crashed (`RunStatus.retryable`) is
    retried while the job has attempts left (`retries`, counted from `first`, the first
    attempt this loop or backfill made), never while the host stops; a run by hand is never
    retried (its caller does not ask). An attempt abandoned by a host that stopped renewing
    its claim counts as made and is retried on the same terms (`retry_after_takeover`). An
    interrupted or abandoned slot found at start is not retried but caught up (it does not
    settle its slot), so it never runs twice.
    """
    made = attempt - first + 1  # attempts of this slot made so far
    if spec is None or stopping or not outcome.status.retryable or made > spec.retries:
        return None
    # From the slot at the earliest: a run prepared ahead may end before its instant.
    return max(now, slot) + dt.timedelta(seconds=backoff(spec.retry_delay, made))


def retry_after_takeover(spec: JobSpec, attempt: int, slot: dt.datetime, now: dt.datetime) -> PendingRetry | None:
    """The retry an attempt abandoned by its host leaves, if the job has attempts left; a run
    prepared there for a slot still to come is not retried but run here at its instant."""
    if attempt > spec.retries or slot > now:
        return None
    due = now + dt.timedelta(seconds=backoff(spec.retry_delay, attempt))
    return PendingRetry(due, spec.name, slot, attempt + 1)


class Retries:
    """The retries this host knows, queued by when they are due (see `retry_due` for the rule)."""

    def __init__(self, store: StateStore, call: StoreCalls, jobs: dict[str, JobSpec]):
        self.store = store
        self.call = call
        self.jobs = jobs
        self.queue = RetryQueue()
        self._known: set[tuple[str, float, int]] = set()

    def add(self, retry: PendingRetry) -> None:
        key = (retry.job, retry.slot.timestamp(), retry.attempt)
        if key not in self._known:
            self._known.add(key)
            self.queue.add(retry)

    def forget(self, retry: PendingRetry) -> None:
        """Look at `retry` again when the store lists it next (it could not be claimed)."""
        self._known.discard((retry.job, retry.slot.timestamp(), retry.attempt))

    def merge(self) -> None:
        """Pending retries from the store that this host does not know yet (another host's, whose
        host may be gone): each host queues them, and the claim decides which one runs it."""
        stored = self.call(self.store.pending_retries, None)
        if stored is None:
            return
        for retry in stored:
            if retry.job in self.jobs:
                self.add(retry)
        # Forget the retries that have left the store and the queue, so the set stays small.
        keep = {(r.job, r.slot.timestamp(), r.attempt) for r in [*stored, *self.queue]}
        self._known &= keep

    def pop_due(self, now: dt.datetime) -> list[PendingRetry]:
        return self.queue.pop_due(now)

    def next_wakeup(self) -> dt.datetime | None:
        return self.queue.next_due()
