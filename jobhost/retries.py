"""Retries: when the next attempt of a failed slot is due, and the queue of pending ones.

Pure: the caller passes the time and the random source, so backoff is testable.
Pending retries are also kept in the state store, so a restart does not lose them.
"""

from __future__ import annotations

import datetime as dt
import heapq
import random
from collections.abc import Iterator

from jobhost.store.model import PendingRetry

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
