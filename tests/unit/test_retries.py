"""Retry timing on an injected random source, and the queue of pending retries."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from jobhost.engine.retries import MAX_DELAY, RetryQueue, backoff
from jobhost.store.model import PendingRetry

T0 = dt.datetime(2026, 11, 23, 6, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("attempt", "base"), [(1, 60), (2, 120), (3, 240), (4, 480)])
def test_backoff_doubles_each_attempt_within_the_jitter(attempt: int, base: float) -> None:
    delays = [backoff(60, attempt, random.Random(seed)) for seed in range(200)]
    assert min(delays) >= base * 0.8 and max(delays) <= base * 1.2
    assert max(delays) - min(delays) > base * 0.2  # spread, so many jobs do not retry in step


def test_backoff_is_capped() -> None:
    assert backoff(3600, 10, random.Random(1)) <= MAX_DELAY


def test_queue_gives_due_retries_earliest_first() -> None:
    late = PendingRetry(T0 + dt.timedelta(minutes=5), "b", T0, 2)
    early = PendingRetry(T0 + dt.timedelta(minutes=1), "a", T0, 2)
    queue = RetryQueue([late])
    queue.add(early)
    assert queue.next_due() == early.due
    assert queue.pop_due(T0) == []
    assert queue.pop_due(T0 + dt.timedelta(minutes=10)) == [early, late]
    assert len(queue) == 0
