"""The runs in flight on this host: starting them, waiting on them, stopping and reaping them.

One thread waits on every run's pipes and pidfd and on the signal pipe (`Watcher`),
so forking is safe and nothing blocks the loop. A run prepared ahead of its slot is
not watched until just after its instant: a readable pipe would wake the loop, which
then takes the CPU from the job's first statements.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from jobhost.outcomes import Outcome
from jobhost.runs.process import RELEASE_RECHECK
from jobhost.runs.watcher import Watcher

if TYPE_CHECKING:
    from jobhost.engine.attempt import Attempt
    from jobhost.runs.base import Run

POLL_INTERVAL = 0.2  # seconds, only where a child's exit cannot be watched with a pidfd


class RunNotStarted(Exception):
    """The run's process (or thread) could not be made: nothing of it is going."""


class Runner:
    """The attempts whose run has started (or is prepared), by run id."""

    def __init__(self, max_workers: int, monotonic: Callable[[], float], watcher: Watcher | None = None):
        self.max_workers = max_workers
        self.monotonic = monotonic
        self.watcher = watcher or Watcher()
        self.active: dict[str, Attempt] = {}

    # -- what is going ---------------------------------------------------

    @property
    def free(self) -> int:
        return self.max_workers - len(self.active)

    def going(self, job: str) -> bool:
        """Whether a run of `job` is going or prepared here: the one answer to "is it running"."""
        return any(attempt.job == job for attempt in list(self.active.values()))

    def in_flight(self, job: str) -> list[str]:
        """The run ids of the job's runs going here, prepared ones left out (not going yet)."""
        return [a.run_id for a in self.active.values() if a.job == job and a.run is not None and not a.run.prepared]

    def prepared(self, job: str) -> bool:
        """Whether a run of the job is prepared here for a slot still to come."""
        return any(a.job == job and a.run is not None and a.run.prepared for a in self.active.values())

    def running(self) -> int:
        """Runs going, prepared ones once released (read from other threads, for metrics)."""
        return sum(1 for a in list(self.active.values()) if a.run is not None and not a.run.prepared)

    # -- starting --------------------------------------------------------

    def launch(self, attempt: Attempt, run: Run, *, release_in: float | None = None) -> None:
        """Start `run` for `attempt` (RunNotStarted if its process cannot be made: nothing is
        going then). With `release_in` (seconds, late if not positive), the run is prepared:
        its process waits and calls the job at the slot's instant. Once it is going, a failure
        to watch it is the loop's own and goes up: a run must never go on unwatched."""
        now = self.monotonic()
        try:
            if release_in is None:
                run.start(now)
            else:  # the child waits on the real monotonic clock, whatever the loop's is
                run.start(now, release_at=time.monotonic() + release_in)
        except OSError as exc:
            raise RunNotStarted(str(exc)) from exc
        lead = release_in or 0.0
        attempt.run, attempt.started_mono = run, now + max(0.0, lead)
        self.active[attempt.run_id] = attempt
        if lead > 0:  # not at the instant: the run itself looks whether it was released late
            attempt.watch_at = now + lead + RELEASE_RECHECK
        else:
            self.watcher.watch(attempt.run_id, run.fds())

    # -- one turn --------------------------------------------------------

    def wait(self, timeout: float) -> None:
        """Wait up to `timeout` for a pipe, a pidfd or a signal; hand what is readable to its run."""
        for run_id, fd in self.watcher.wait(timeout):
            attempt = self.active.get(run_id)
            if attempt is not None and attempt.run is not None:
                self.watcher.release(attempt.run.on_readable(fd, self.monotonic()))

    def reap(self) -> Iterator[Attempt]:
        """Watch the prepared runs whose instant has passed, poll every run, and yield each that
        ended, its descriptors closed; the caller settles one before the next is polled."""
        now = self.monotonic()
        for attempt in list(self.active.values()):
            if attempt.watch_at is not None and now >= attempt.watch_at and attempt.run is not None:
                attempt.watch_at = None
                self.watcher.watch(attempt.run_id, attempt.run.fds())
        for run_id, attempt in list(self.active.items()):
            run = attempt.run
            assert run is not None
            self.watcher.release(run.poll(now))
            if run.done or run.handed:  # (handed: a keeper that took an order the host had given up on)
                del self.active[run_id]
                attempt.watch_at = None
                self.watcher.release(run.fds())
                self.watcher.release(run.held_fds())
                yield attempt

    def next_wait(self) -> float | None:
        """Seconds until a run has something to do (a timeout, a kill, a release to look at)."""
        now = self.monotonic()
        limits = []
        for attempt in self.active.values():
            run = attempt.run
            if run is None:
                continue
            if (deadline := run.next_deadline()) is not None:
                limits.append(deadline - now)
            if run.needs_polling:
                limits.append(POLL_INTERVAL)
            if attempt.watch_at is not None:
                limits.append(attempt.watch_at - now)
        return min(limits, default=None)

    # -- stopping --------------------------------------------------------

    def stop(self, attempt: Attempt, outcome: Outcome, *, at_once: bool, signum: int = signal.SIGTERM) -> None:
        attempt.stop_requested = True
        if attempt.run is not None:
            attempt.run.stop(outcome, self.monotonic(), at_once=at_once, signum=signum)

    def stop_all(self, outcome: Outcome, *, at_once: bool, signum: int = signal.SIGTERM) -> None:
        """Stop every run with `signum` (at once: SIGKILL, even those already told to stop)."""
        for attempt in self.active.values():
            if at_once or not attempt.stop_requested:
                self.stop(attempt, outcome, at_once=at_once, signum=signum)

    def hand_over(self) -> list[Attempt]:
        """Stopping: each run with a keeper goes on to its end without the host; the attempts let go."""
        now = self.monotonic()
        handed = []
        for run_id, attempt in list(self.active.items()):
            run = attempt.run
            if run is not None and run.hand_over(now, now - attempt.started_mono):
                del self.active[run_id]
                attempt.watch_at = None
                self.watcher.release(run.fds())
                self.watcher.release(run.held_fds())
                handed.append(attempt)
        return handed

    def cancel_prepared(self) -> None:
        """Stopping: runs prepared for a slot still to come do not start (their process says so)."""
        for attempt in self.active.values():
            run = attempt.run
            if run is not None and run.prepared:
                self.watcher.release(run.cancel())
                if attempt.watch_at is not None:
                    attempt.watch_at = None
                    self.watcher.watch(attempt.run_id, run.fds())
