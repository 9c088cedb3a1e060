"""Logging for this deployment: JSON lines (python-json-logger) or text, on one stream.

Only this module installs handlers; the engine only calls ``getLogger``.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from configuration.log_stream import Descriptor, LogFile, QueuedLogHandler, separate_stderr
from jobhost.context import RunContextFilter
from jobhost.output import job_fields

_FIRST = ("timestamp", "level", "logger", "message")
_CONTEXT = ("job", "run_id", "slot", "attempt")


class JsonLineFormatter(JsonFormatter):
    """The contract's fields first; a run's traceback (from its child) as `exc_info`."""

    def __init__(self, host: str | None = None) -> None:
        self.host = host  # JOBS_HOST_NAME: which of several hosts wrote the line
        super().__init__(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp=True,
        )

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        # The contract's fields come from the record itself; an `extra` of the same
        # name (a job's logger.info(..., extra={"level": ...})) is kept as extra_<name>.
        for key, value in (("level", record.levelname), ("logger", record.name), ("message", record.getMessage())):
            if log_data.get(key) != value:
                log_data[f"extra_{key}"] = log_data[key]
                log_data[key] = value
        if "timestamp" in vars(record):
            log_data["extra_timestamp"] = vars(record)["timestamp"]
        if self.host is not None:
            if "host" in log_data:  # a job's own extra={"host": ...}
                log_data["extra_host"] = log_data["host"]
            log_data["host"] = self.host
        trace = log_data.pop("run_traceback", None)
        if trace and "exc_info" not in log_data:
            log_data["exc_info"] = trace
        if "timestamp" in log_data:
            log_data["timestamp"] = log_data["timestamp"].isoformat().replace("+00:00", "Z")
        ordered = {key: log_data.pop(key) for key in _FIRST if key in log_data}
        ordered.update(log_data)
        log_data.clear()
        log_data.update(ordered)


class TextFormatter(logging.Formatter):
    """One readable line: time, level, logger, [job run], message, then the traceback."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        job = getattr(record, "job", None)
        original = record.msg, record.args
        message = record.getMessage()
        if job:
            message = f"[{job} {str(getattr(record, 'run_id', ''))[:8]}] {message}"
        if fields := job_fields(record):  # what the job logged with extra=, after its message
            message += "  " + " ".join(f"{key}={value}" for key, value in fields.items())
        record.msg, record.args = message, None
        try:
            text = super().format(record)
        finally:
            record.msg, record.args = original
        trace = getattr(record, "run_traceback", None)
        return f"{text}\n{trace.rstrip()}" if trace else text


def configure_logging(
    level: str, fmt: str, stream: TextIO | None = None, host: str | None = None, log_file: LogFile | None = None
) -> None:
    """Send every log record to `stream` in `fmt`; by default to stdout through a descriptor of
    its own (so that the engine may turn descriptor 1 into a pipe for stray output), or to
    `log_file`, written by a thread of its own (so that a stdout nobody reads, or a full disk,
    never blocks the loop). JSON lines carry `host` (JOBS_HOST_NAME). What cannot be said in the
    log (its own trouble) goes to stderr, when that is not where the log goes."""
    handler: logging.Handler
    errors: int | None
    if log_file is not None:
        sys.stderr.flush()
        errors = os.dup(2)
        handler = QueuedLogHandler(log_file, errors)
        # A crash that no log line can tell (a segfault, a fatal error of Python): its traceback
        # goes to stderr as it was (supervisord's file), not to the pipe the engine makes of it.
        faulthandler.enable(errors, all_threads=True)
    elif stream is None:
        for standard in (sys.stdout, sys.stderr):
            standard.flush()
        errors = os.dup(2) if separate_stderr(1, 2) else None
        handler = QueuedLogHandler(Descriptor(os.dup(1)), errors)
    else:
        handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter(host) if fmt == "json" else TextFormatter())
    handler.addFilter(RunContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)

    def log_uncaught(kind: type[BaseException], value: BaseException, trace: Any) -> None:
        logging.getLogger("jobhost").critical("uncaught exception", exc_info=(kind, value, trace))

    sys.excepthook = log_uncaught
    threading.excepthook = lambda args: log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)  # type: ignore[arg-type]
