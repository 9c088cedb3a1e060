"""The recent log lines of each slot, kept for its failure event as Sentry breadcrumbs."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import OrderedDict, deque
from typing import Any

from jobhost.context import RunContext, RunContextFilter
from jobhost.observe.sentry.events import cut
from jobhost.output import job_fields

MAX_BREADCRUMBS = 100  # log lines of a slot kept for its failure event
MAX_SLOTS_TRACKED = 1000  # slots whose log lines are kept at once


class Breadcrumbs(logging.Handler):
    """Keeps the recent log records of each slot (all its attempts), for its failure event. They
    are turned into breadcrumbs only when there is an event to send: most runs succeed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(RunContextFilter())  # a thread-isolated job's records get the run's fields
        self._slots: OrderedDict[tuple[str, str], deque[logging.LogRecord]] = OrderedDict()
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        job, slot = getattr(record, "job", None), getattr(record, "slot", None)
        if getattr(record, "run_id", None) is None or not isinstance(job, str) or not isinstance(slot, str):
            return
        with self._guard:
            lines = self._slots.get((job, slot))
            if lines is None:
                lines = self._slots[(job, slot)] = deque(maxlen=MAX_BREADCRUMBS)
                while len(self._slots) > MAX_SLOTS_TRACKED:
                    self._slots.popitem(last=False)
            lines.append(record)

    def take(self, context: RunContext) -> list[dict[str, Any]]:
        """The slot's lines so far, as breadcrumbs."""
        with self._guard:
            records = list(self._slots.get((context.job, context.slot.isoformat())) or ())
        return [_crumb(record) for record in records]

    def forget(self, context: RunContext) -> None:
        """The slot has ended for good."""
        with self._guard:
            self._slots.pop((context.job, context.slot.isoformat()), None)


def _crumb(record: logging.LogRecord) -> dict[str, Any]:
    crumb: dict[str, Any] = {
        "type": "default",
        "category": record.name,
        "level": _level(record.levelno),
        "message": cut(record.getMessage()),
        "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
    }
    data: dict[str, Any] = {
        k: getattr(record, k) for k in ("event", "stream", "attempt", "run_id") if hasattr(record, k)
    }
    data.update({key: cut(value) for key, value in job_fields(record).items()})  # what the job logged with extra=
    if data:
        crumb["data"] = data
    return crumb


def _level(levelno: int) -> str:
    if levelno >= logging.CRITICAL:
        return "fatal"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    return "info" if levelno >= logging.INFO else "debug"
