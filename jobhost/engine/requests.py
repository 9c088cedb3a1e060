"""Runs asked for from another thread (the HTTP API's POST /run): queued for the loop to take.

A request is taken, or refused, never lost at the stop: the queue is closed under the
same lock that takes requests in, and what it holds then is recorded interrupted.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import deque
from collections.abc import Iterator

from jobhost.context import Params, RunContext
from jobhost.definition.spec import JobSpec
from jobhost.engine.attempt import Attempt
from jobhost.engine.stopping import Stop
from jobhost.errors import HostStopping
from jobhost.runs.watcher import Watcher

logger = logging.getLogger("jobhost.host")


class RunRequests:
    """The runs asked for by hand that the loop has not taken yet."""

    def __init__(self, watcher: Watcher, stop: Stop):
        self.watcher = watcher
        self.stop = stop
        self._asked: deque[Attempt] = deque()
        self._open = threading.Lock()
        self._closed = False

    def __len__(self) -> int:
        return len(self._asked)

    def ask(self, spec: JobSpec, slot: dt.datetime, requested_by: str, params: Params | None = None) -> RunContext:
        """Ask the loop for one run of `spec` for `slot` now, as `run` makes one: not claimed, not
        retried, whatever the schedule, pause or overlap say, with the `params` given (checked). It
        waits for a free worker like any other run. Raises HostStopping once the host is stopping."""
        attempt = Attempt.new(spec, slot, params=params, manual=True, requested_by=requested_by)
        with self._open:
            if self.stop.requested or self.watcher.signals or self._closed:
                raise HostStopping("the host is stopping; no new run starts")
            self._asked.append(attempt)
        self.watcher.wake()
        return attempt.context

    def take(self) -> Iterator[Attempt]:
        """The requests in the order they came, one at a time: the caller puts each where it waits
        before the next is taken (so `/metrics` counts it all along), and each is logged as taken."""
        while self._asked:
            attempt = self._asked.popleft()
            yield attempt
            logger.info(
                "run %s of %s for %s asked for by hand by %s",
                attempt.run_id,
                attempt.job,
                attempt.slot.isoformat(),
                attempt.requested_by,
                extra={"event": "run_requested", "requested_by": attempt.requested_by, **attempt.context.fields()},
            )

    def close(self) -> Iterator[Attempt]:
        """Refuse every request from now on; the ones already asked for are taken."""
        with self._open:
            self._closed = True
        return self.take()
