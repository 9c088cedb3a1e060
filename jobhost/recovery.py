"""What a starting host does about runs a previous host left unfinished, and the store guard.

A run recorded as running by this host whose process is gone was cut short when
the host died: it is recorded from the outcome its process left behind, if it
got that far, and as abandoned otherwise (then caught up, as its slot is not
settled). A run whose process is still alive belongs to someone else (`jobs.py
run` in a terminal) and is left alone.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobhost.child import read_result
from jobhost.context import RunContext
from jobhost.lifecycle import Lifecycle, RunEvent
from jobhost.outcomes import RunStatus, outcome_of
from jobhost.processes import kill_leftovers, run_process_alive
from jobhost.store import StateStore

logger = logging.getLogger("jobhost.host")

DIED = "the host stopped before the run ended (killed, crashed or lost power)"
WAITED = "the host stopped while it waited; the slot is looked at again by catch-up"
LEFT = "recorded at the next start: the host died before it could"


def recover(
    store: StateStore,
    lifecycle: Lifecycle,
    hostname: str,
    result_file: Callable[[RunContext], Path | None],
    now: dt.datetime,
) -> None:
    """Settle what the previous host of this machine left running or waiting."""
    for record in guard(lambda: store.running(hostname), []):
        context = RunContext(record.job, record.run_id, record.slot, record.attempt)
        if record.status == RunStatus.WAITING:
            guard(lambda c=context: store.finish_run(c.run_id, RunStatus.WAITING, WAITED, now, None), None)
            continue
        if record.pid is not None and run_process_alive(record.pid):
            continue
        if record.pid is not None:
            kill_leftovers(record.pid)
        if record.started is not None and record.started > now:  # prepared; its instant has not come
            guard(lambda c=context: store.withdraw(c.run_id, None), None)
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
            guard(lambda c=context, o=left, r=reason: store.finish_run(c.run_id, o.status, r, now, None), None)
            lifecycle.emit(RunEvent(left.status, context, reason, traceback=left.traceback, exception=left.exception))
            path.unlink(missing_ok=True)
            continue
        guard(lambda c=context: store.finish_run(c.run_id, RunStatus.ABANDONED, DIED, now, None), None)
        lifecycle.emit(RunEvent(RunStatus.ABANDONED, context, DIED, extra={"pid": record.pid}))


def guard(call: Callable[[], Any], fallback: Any) -> Any:
    """Call the store; a failing store is logged and must not take the loop down."""
    try:
        return call()
    except Exception:
        logger.exception(
            "the state store failed; the run goes on but may be missing from history",
            extra={"event": "store_failed"},
        )
        return fallback
