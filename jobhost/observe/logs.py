"""The log lines of runs: the line of each lifecycle event (logger `jobhost.run`), and what a
run wrote or logged, re-logged by the host with the run's context (`jobhost.output`, or the
logger the record was made with)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from jobhost.context import RunContext
from jobhost.definition.durations import format_duration
from jobhost.outcomes import RunStatus

if TYPE_CHECKING:
    from jobhost.observe.events import RunEvent

logger = logging.getLogger("jobhost.run")
output_logger = logging.getLogger("jobhost.output")


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
    logger.log(event.status.level, _message(event), extra=fields)


def _message(event: RunEvent) -> str:
    words = event.status.event.removeprefix("run_").replace("_", " ")
    text = f"run {words}"
    if not event.status.ends_run and event.status != RunStatus.RUNNING:  # a slot that did not run: which one
        text += f" for slot {event.context.slot.isoformat()}"
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
