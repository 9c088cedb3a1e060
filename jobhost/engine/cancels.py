"""Cancelling: the runs a person asked to stop, acted on by the host that has them.

A request is kept in the store (jobhost.operations writes it, from the command line or
the API of any host), so the host running the run is the one that stops it: it looks at
each tick, and at once when nudged (its own API thread, or SIGUSR1 from `jobs.py cancel`
on the same machine). A run going gets SIGTERM, raised in the job as at a timeout, and
SIGKILL after the grace; a run waiting on its parents is settled without starting. Either
way it is recorded `cancelled` with who asked: not retried, its slot settled.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING

from jobhost.clock import Clock
from jobhost.engine.attempt import Parked
from jobhost.outcomes import Outcome, RunStatus

if TYPE_CHECKING:
    from jobhost.engine.backlog import Backlog
    from jobhost.engine.recorder import Recorder, StoreCalls
    from jobhost.runs.runner import Runner

logger = logging.getLogger("jobhost.host")


class Cancels:
    """This host's side of cancel requests: which of its runs to stop, and stopping them."""

    def __init__(self, calls: StoreCalls, recorder: Recorder, runner: Runner, backlog: Backlog | None, clock: Clock):
        self.calls = calls
        self.store = calls.store
        self.recorder = recorder
        self.runner = runner
        self.backlog = backlog  # None in the foreground: nothing waits there
        self.clock = clock

    def look(self) -> None:
        """Stop each run of this host a request names; tell the store which were acted on."""
        requests = self.calls(self.store.cancel_requests, [])
        if not requests:
            return
        waiting = {a.run_id: a for a in self.backlog.waiting_on_parents()} if self.backlog is not None else {}
        done = []
        for request in requests:
            reason = request.outcome_reason()
            if (attempt := self.runner.active.get(request.run_id)) is not None:
                if not attempt.stop_requested:
                    self.runner.stop(
                        attempt, Outcome(RunStatus.CANCELLED, reason), at_once=False, signum=signal.SIGTERM
                    )
                    logger.info(
                        "run %s of %s is being cancelled, as %s asked: SIGTERM now, SIGKILL after the grace",
                        attempt.run_id,
                        attempt.job,
                        request.asked_by,
                        extra={"event": "run_cancelling", "asked_by": request.asked_by, **attempt.context.fields()},
                    )
                done.append(request.run_id)
            elif (parked := waiting.get(request.run_id)) is not None and self.backlog is not None:
                assert parked.parked is Parked.PARENTS
                self.backlog.unpark(parked)
                self.recorder.settle_cancelled(parked, reason)
                done.append(request.run_id)
        if done:
            self.calls(lambda: self.store.cancels_done(done, self.clock()), None)
