"""What a starting host does about runs a previous host left unfinished.

A run recorded as running by this host whose process is gone was cut short when
the host died: it is recorded from the outcome its process left behind, if it
got that far, and as abandoned otherwise (then caught up, as its slot is not
settled), or as cancelled if a person had asked for that and the host did not get to it. A run whose process is still alive is left alone: its keeper carries
it on after a restart (and records it), or it is `jobs.py run` in a terminal; the loop counts it
as going (`KeptRuns`) and looks again until it has ended.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Collection
from functools import partial
from pathlib import Path
from typing import Any

from jobhost.context import RunContext
from jobhost.observe.events import Lifecycle, RunEvent
from jobhost.outcomes import RunStatus
from jobhost.runs.child import read_result
from jobhost.runs.processes import kill_leftovers, run_process_alive
from jobhost.runs.results import outcome_of
from jobhost.store import RunRecord, StateStore
from jobhost.store.model import CancelRequest

logger = logging.getLogger("jobhost.host")

DIED = "the host stopped before the run ended (killed, crashed or lost power)"
KEEPER_DIED = "its keeper, which carried it on after a restart, died before the run ended (killed, or out of memory)"
WAITED = "the host stopped while it waited; the slot is looked at again by catch-up"
LEFT = "recorded at the next start: the host died before it could"


_FAILED = object()  # what a store call gives back when the store failed


class KeptRuns:
    """Runs recorded under this host's name whose process outlived the loop that started them (a
    keeper carrying its run on after a restart): going, though not this loop's, so counted for
    `overlap`, and looked at again until they have ended."""

    def __init__(self) -> None:
        self.runs: dict[str, RunRecord] = {}

    def of(self, job: str) -> set[str]:
        """The run ids of the job's kept runs."""
        return {run_id for run_id, record in self.runs.items() if record.job == job}

    def ended(self, run_ids: Collection[str]) -> None:
        for run_id in run_ids:
            self.runs.pop(run_id, None)


def recover(
    store: StateStore,
    lifecycle: Lifecycle,
    hostname: str,
    result_file: Callable[[RunContext], Path | None],
    now: dt.datetime,
    call: Callable[[Callable[[], Any], Any], Any],
    mine: Collection[str] = (),
    kept: KeptRuns | None = None,
    only: Collection[str] | None = None,
    died: str = DIED,
) -> bool:
    """Settle what the previous host of this machine left running or waiting; False if the store
    failed on the way (the caller tries again once it works: what is left stays as it was).

    `call(fn, fallback)` makes each store call (the loop's link to the store: a failure is logged once);
    `mine`: runs of this host's own, going on, left alone when it tries again; `kept` is told
    which runs are alive; with `only`, no other run is looked at (the kept ones, again), and one
    found dead `died` for that reason."""
    whole = True

    def write(fn: Callable[[], Any]) -> bool:
        """Whether the write was made (False: the store failed, or a run had ended meanwhile)."""
        nonlocal whole
        done = call(fn, _FAILED)
        if done is _FAILED:
            whole = False
            return False
        return done is not False

    records = call(lambda: store.running(hostname), _FAILED)
    if records is _FAILED:
        return False
    asked = {request.run_id: request for request in call(store.cancel_requests, [])}

    def cancelled(context: RunContext, request: CancelRequest, why: str, *, running: bool) -> None:
        """A run asked to be cancelled that the host did not get to: cancelled, as the person asked."""
        reason = f"{request.outcome_reason()} ({why})"
        finish: Callable[[], bool | None]
        if running:  # unless it ended meanwhile
            finish = partial(store.finish_left_run, context.run_id, RunStatus.CANCELLED, reason, now)
        else:
            finish = partial(store.finish_run, context.run_id, RunStatus.CANCELLED, reason, now, None)
        if write(finish):
            write(partial(store.cancels_done, [context.run_id], now))
            lifecycle.emit(RunEvent(RunStatus.CANCELLED, context, reason))

    for record in records:
        context = RunContext(record.job, record.run_id, record.slot, record.attempt)
        if record.run_id in mine or (only is not None and record.run_id not in only):
            continue
        request = asked.get(record.run_id)
        if record.status == RunStatus.WAITING:
            if request is not None:
                cancelled(context, request, "the host had stopped while it waited", running=False)
            else:
                write(partial(store.finish_run, context.run_id, RunStatus.WAITING, WAITED, now, None))
            continue
        if record.pid is not None and run_process_alive(record.pid):
            if kept is not None and record.status == RunStatus.RUNNING:
                kept.runs[record.run_id] = record
            continue
        if kept is not None:
            kept.ended([record.run_id])
        if record.pid is not None:
            kill_leftovers(record.pid)
        if record.started is not None and record.started > now:  # prepared; its instant has not come
            if not write(partial(store.withdraw, context.run_id, None)):
                continue
            logger.info(
                "run %s of %s was prepared for %s but never started; the slot is run when it comes",
                record.run_id,
                record.job,
                record.slot.isoformat(),
                extra={"event": "run_withdrawn", "job": record.job, "run_id": record.run_id},
            )
            continue
        path = result_file(context)
        result = read_result(path) if path is not None else None
        if path is not None and result is not None:
            left = outcome_of(result)
            reason = f"{left.reason}; {LEFT}" if left.reason else LEFT
            if write(partial(store.finish_left_run, context.run_id, left.status, reason, now)):
                lifecycle.emit(
                    RunEvent(left.status, context, reason, traceback=left.traceback, exception=left.exception)
                )
                path.unlink(missing_ok=True)
            continue
        if request is not None:
            cancelled(context, request, died, running=True)
        elif write(partial(store.finish_left_run, context.run_id, RunStatus.ABANDONED, died, now)):
            lifecycle.emit(RunEvent(RunStatus.ABANDONED, context, died, extra={"pid": record.pid}))
    return whole
