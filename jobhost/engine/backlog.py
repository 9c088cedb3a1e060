"""Every attempt claimed (or asked for) and not started, in one place with named states.

An attempt waits in one of the `Parked` states: ready for a worker; behind its job's run
here or on another host; for its parents; stalled while the store is out of reach.
An attempt knows where it waits (`parked`), so a lost claim removes it from there in one
call (`unpark`); the stop drains the lot, and `/metrics` counts it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from jobhost.engine.attempt import Attempt, Parked


class Backlog:
    """The attempts not started, by state; ready ones in the order they became ready."""

    def __init__(self) -> None:
        self._ready: deque[Attempt] = deque()
        self._behind: dict[str, deque[Attempt]] = {}  # by job, in the order they run
        self._behind_remote: dict[str, Attempt] = {}  # by job: one at most
        self._parents: list[Attempt] = []
        self._stalled: list[Attempt] = []

    def park(self, attempt: Attempt, where: Parked) -> None:
        """Put `attempt` where it waits now (it must not wait anywhere else)."""
        attempt.parked = where
        if where is Parked.READY:
            self._ready.append(attempt)
        elif where is Parked.BEHIND:
            self._behind.setdefault(attempt.job, deque()).append(attempt)
        elif where is Parked.BEHIND_REMOTE:
            self._behind_remote[attempt.job] = attempt
        elif where is Parked.PARENTS:
            self._parents.append(attempt)
        else:
            self._stalled.append(attempt)

    def unpark(self, attempt: Attempt) -> None:
        """Take `attempt` out of wherever it waits (not there: nothing happens)."""
        where, attempt.parked = attempt.parked, None
        if where is Parked.READY:
            self._ready.remove(attempt)
        elif where is Parked.BEHIND:
            self._behind[attempt.job].remove(attempt)
        elif where is Parked.BEHIND_REMOTE:
            del self._behind_remote[attempt.job]
        elif where is Parked.PARENTS:
            self._parents.remove(attempt)
        elif where is Parked.STALLED:
            self._stalled.remove(attempt)

    # -- reading ---------------------------------------------------------

    @property
    def has_ready(self) -> bool:
        return bool(self._ready)

    def pop_ready(self) -> Attempt:
        attempt = self._ready.popleft()
        attempt.parked = None
        return attempt

    def ready(self) -> list[Attempt]:
        return list(self._ready)

    @property
    def ready_count(self) -> int:
        return len(self._ready)

    def ready_of(self, job: str) -> list[str]:
        """The run ids of the job's attempts ready for a worker: due, so as good as going."""
        return [attempt.run_id for attempt in self._ready if attempt.job == job]

    def behind(self, job: str) -> list[Attempt]:
        """The attempts waiting behind the job's run going here, in the order they run."""
        return list(self._behind.get(job, ()))

    def behind_remote(self) -> list[Attempt]:
        return list(self._behind_remote.values())

    def is_behind_remote(self, job: str) -> bool:
        return job in self._behind_remote

    def waiting_on_parents(self) -> list[Attempt]:
        return list(self._parents)

    def queued_for(self, job: str) -> bool:
        """Whether an attempt of the job waits for a worker (it is due: it counts as going)."""
        return any(attempt.job == job for attempt in self._ready)

    def counts(self) -> tuple[int, int]:
        """Attempts due but not started (for a worker, a run going, the store), and those waiting
        for their parents; read from other threads for metrics, so over copies."""
        queued = len(self._ready) + sum(map(len, list(self._behind.values())))
        queued += len(self._behind_remote) + len(self._stalled)
        return queued, len(self._parents)

    # -- moving ----------------------------------------------------------

    def next_behind(self, job: str) -> None:
        """The job's run here ended: the first attempt behind it is ready."""
        queue = self._behind.get(job)
        if queue:
            attempt = queue.popleft()
            self.park(attempt, Parked.READY)

    def unstall(self) -> None:
        """The store is back: what it kept from starting is ready again, in its order."""
        stalled, self._stalled = self._stalled, []
        for attempt in stalled:
            self.park(attempt, Parked.READY)

    def ready_all_behind_remote(self) -> None:
        """The host stops: what waited behind another host's run is recorded with the rest."""
        for attempt in self.behind_remote():
            self.unpark(attempt)
            self.park(attempt, Parked.READY)

    def drain_ready(self) -> Iterator[Attempt]:
        """Take out every attempt ready, in their order, one at a time (the host stops: the caller
        records each before the next is taken). Those behind another host or stalled are made
        ready first by the caller; those waiting for their parents stay: the stop closes them apart."""
        while self._ready:
            yield self.pop_ready()

    def drain_behind(self) -> Iterator[Attempt]:
        """Take out every attempt behind a run here, one at a time, job by job in their order."""
        for queue in self._behind.values():
            while queue:
                attempt = queue.popleft()
                attempt.parked = None
                yield attempt
