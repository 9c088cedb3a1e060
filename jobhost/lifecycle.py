"""Run lifecycle events: the one place logging (and later Sentry and metrics) observe runs.

The loop emits a `RunEvent` when a run starts and when it ends (or is skipped,
missed, interrupted ...). Observers are called in order; a broken observer is
logged and never takes the host down.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from jobhost.context import RunContext
from jobhost.durations import format_duration
from jobhost.outcomes import RunStatus

logger = logging.getLogger("jobhost.run")
output_logger = logging.getLogger("jobhost.output")

_LEVELS = {
    RunStatus.RUNNING: logging.INFO,
    RunStatus.SUCCEEDED: logging.INFO,
    RunStatus.FAILED: logging.ERROR,
    RunStatus.TIMED_OUT: logging.ERROR,
    RunStatus.CRASHED: logging.ERROR,
    RunStatus.SKIPPED: logging.WARNING,
    RunStatus.MISSED: logging.WARNING,
    RunStatus.WAITING: logging.INFO,
    RunStatus.INTERRUPTED: logging.WARNING,
    RunStatus.ABANDONED: logging.ERROR,
}


@dataclass(frozen=True)
class RunEvent:
    """Something that happened to one run."""

    status: RunStatus
    context: RunContext
    reason: str = ""
    duration_ms: int | None = None
    traceback: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    retry_at: dt.datetime | None = None  # set when this attempt failed and another one is scheduled

    @property
    def event(self) -> str:
        return "run_retrying" if self.retry_at is not None else self.status.event

    @property
    def final(self) -> bool:
        """True unless another attempt of the same slot is scheduled (for observers that report failures)."""
        return self.retry_at is None


Observer = Callable[[RunEvent], None]


class Lifecycle:
    """Hands each RunEvent to every observer."""

    def __init__(self, observers: Iterable[Observer] = ()):
        self.observers = [log_event, *observers]

    def emit(self, event: RunEvent) -> None:
        for observer in self.observers:
            try:
                observer(event)
            except Exception:  # a broken observer must not take runs down
                logging.getLogger("jobhost").exception("a run observer failed on %s", event.event)


def log_event(event: RunEvent) -> None:
    """The lifecycle log line: `event`, `status`, `reason`, `duration_ms`, `exc_info`."""
    fields: dict[str, Any] = {**event.context.fields(), "event": event.event, "status": str(event.status)}
    if event.reason:
        fields["reason"] = event.reason
    if event.duration_ms is not None:
        fields["duration_ms"] = event.duration_ms
    if event.traceback:
        fields["run_traceback"] = event.traceback
    if event.retry_at is not None:
        fields["retry_at"] = event.retry_at.isoformat()
    fields.update(event.extra)
    logger.log(_LEVELS[event.status], _message(event), extra=fields)


def _message(event: RunEvent) -> str:
    words = event.status.event.removeprefix("run_").replace("_", " ")
    text = f"run {words}"
    if event.reason:
        text += f": {event.reason}"
    if event.duration_ms is not None and event.status.ended:
        text += f" ({format_duration(event.duration_ms / 1000)})"
    if event.retry_at is not None:
        text += f"; attempt {event.context.attempt} failed, retrying at {event.retry_at.isoformat()}"
    return text


def log_output(context: RunContext, stream: str, line: str) -> None:
    """One line a run wrote to stdout or stderr, as a log line with the run's context."""
    output_logger.info(line, extra={**context.fields(), "stream": stream})


def log_record(context: RunContext, message: dict[str, Any]) -> None:
    """A log record made inside a child process, re-emitted by the host with the run's context."""
    record = logging.makeLogRecord(
        {
            "name": str(message.get("name", "job")),
            "levelno": int(message.get("levelno", logging.INFO)),
            "levelname": logging.getLevelName(int(message.get("levelno", logging.INFO))),
            "msg": str(message.get("msg", "")),
        }
    )
    if isinstance(message.get("created"), int | float):
        record.created = float(message["created"])
    reserved = set(vars(record))
    for key, value in (message.get("extra") or {}).items():
        if key not in reserved:
            setattr(record, key, value)
    context.apply(record)
    if message.get("traceback"):
        record.run_traceback = message["traceback"]
    logger_for_record = logging.getLogger(record.name)
    if logger_for_record.isEnabledFor(record.levelno):
        logger_for_record.handle(record)
