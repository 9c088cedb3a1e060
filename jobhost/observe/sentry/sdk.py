"""The Sentry SDK as a job host sets it up: its options, a transport that says when events are
lost, and the filters that keep a run's log records out of events (they are its breadcrumbs)."""

from __future__ import annotations

import logging
import time
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.atexit import AtexitIntegration
from sentry_sdk.integrations.logging import LoggingIntegration, ignore_logger
from sentry_sdk.transport import HttpTransport

from jobhost.context import current_run
from jobhost.observe.sentry.scrubber import SecretScrubber

FLUSH_TIMEOUT = 2.0  # seconds the host waits for Sentry when it stops (inside supervisord's stopwaitsecs)
CHILD_FLUSH_TIMEOUT = 2.0  # seconds a run's process waits to send what the job itself captured
QUEUE_SIZE = 1000  # events and check-ins waiting to be sent; beyond that Sentry's SDK drops them
MAX_VALUE = 1024  # characters of a local variable or a breadcrumb kept in an event
LOST_LINE_INTERVAL = 600.0  # seconds between two log lines saying events are being lost

_in_run = False  # True in a run's own process
logger = logging.getLogger("jobhost.sentry")


def sentry_options(dsn: str, environment: str, release: str | None) -> dict[str, Any]:
    """The SDK's options for a job host (used again in each run's process)."""
    return {
        "dsn": dsn,
        "environment": environment,
        "release": release,
        # Runs are reported by the lifecycle, not from their log lines; the host's own
        # errors (a job module that fails to import, a failing state store) are events.
        "integrations": [
            LoggingIntegration(level=None, event_level=logging.ERROR),
            AtexitIntegration(callback=_pending_at_exit),
        ],
        # Integrations for web frameworks and databases are of no use to a job host, and
        # looking for them costs each run's process 25 ms.
        "auto_enabling_integrations": False,
        "before_send": _drop_run_log_events,
        "shutdown_timeout": FLUSH_TIMEOUT,
        "transport_queue_size": QUEUE_SIZE,
        "transport": ReportingTransport,
        "max_value_length": MAX_VALUE,
        "event_scrubber": SecretScrubber(),
    }


def start_in_host(options: dict[str, Any]) -> None:
    """Start the SDK in the host's process, leaving the lines of runs and their output to the reporter."""
    sentry_sdk.init(**options)
    for name in ("jobhost.run", "jobhost.output"):  # lifecycle and output lines: the reporter's job
        ignore_logger(name)
    logging.getLogger("urllib3.connectionpool").addFilter(_quiet_sentry_retries)


def start_in_run(options: dict[str, Any]) -> None:
    """Start a client of the run's own in a forked run's process (the host's connections must not
    be shared); from now on, every log record of this process is the run's."""
    global _in_run
    _in_run = True
    sentry_sdk.init(**options)


def _drop_run_log_events(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """A log record of a run (a lifecycle line, a job's own `logger.error`) is a breadcrumb, not
    an event: the run's failure event says it once."""
    record = hint.get("log_record")
    in_run = _in_run or current_run.get() is not None or getattr(record, "run_id", None) is not None
    return None if record is not None and in_run else event


def _quiet_sentry_retries(record: logging.LogRecord) -> bool:
    """urllib3 warns three times for each envelope it cannot deliver; the transport says it once."""
    return not (record.threadName or "").startswith("sentry-sdk")


def _pending_at_exit(pending: int, timeout: float) -> None:
    """The SDK's exit hook, as a log line instead of its text on stderr (which is the JSON log)."""
    logger.warning(
        "sending %d pending Sentry events before exit, waiting at most %gs",
        pending,
        timeout,
        extra={"event": "sentry_flush", "pending": pending},
    )


class ReportingTransport(HttpTransport):
    """The SDK's HTTP transport, saying in the log when events are lost (Sentry unreachable,
    refusing them, rate-limiting, or the queue full), once every ten minutes while it lasts.
    The SDK itself only says so with debug on."""

    _last_said = -LOST_LINE_INTERVAL
    _QUIET = frozenset({"before_send", "event_processor", "sample_rate"})  # dropped on purpose

    def record_lost_event(self, reason: str, data_category: Any = None, item: Any = None, **kwargs: Any) -> None:
        super().record_lost_event(reason, data_category, item, **kwargs)
        now = time.monotonic()
        if reason in self._QUIET or now - ReportingTransport._last_said < LOST_LINE_INTERVAL:
            return
        ReportingTransport._last_said = now
        logger.warning(
            "Sentry is not taking events (%s): failures are being lost; said once every 10 minutes while it lasts",
            reason,
            extra={"event": "sentry_unreachable", "reason": reason},
        )
