"""Sentry: every failure, timeout, crash, abandoned run and missed slot as an event, and a
Sentry Crons monitor per job, checked in from its runs.

A job's exception is turned into Sentry's structured form (frames, source lines,
locals) where it happened, in the run's process, and handed to the host with
the run's outcome; the host sends every event and check-in. So a run never
waits on Sentry, a crashed or killed run is reported as well as one that
raised, and each event carries the run's tags and its recent log lines.

Events are grouped by a fingerprint per job and kind (per exception type for
a raised exception), so one broken job is one Sentry issue however often it
fails. Only the last failed attempt of a slot is an event; the earlier ones
are breadcrumbs of it (unless the job says `report_each_attempt=True`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import sentry_sdk
from sentry_sdk.crons import capture_checkin
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.serializer import serialize
from sentry_sdk.utils import event_from_exception

from jobhost.context import RunContext, RunContextFilter, current_run
from jobhost.lifecycle import Reporter, RunEvent
from jobhost.monitors import heartbeat_config, monitor_config, slug_for
from jobhost.outcomes import RunStatus
from jobhost.registry import JobSpec

FLUSH_TIMEOUT = 2.0  # seconds the host waits for Sentry when it stops (inside supervisord's stopwaitsecs)
CHILD_FLUSH_TIMEOUT = 2.0  # seconds a run's process waits to send what the job itself captured
MAX_BREADCRUMBS = 100  # log lines of a slot kept for its failure event
MAX_SLOTS_TRACKED = 1000  # slots whose log lines are kept at once
QUEUE_SIZE = 1000  # events and check-ins waiting to be sent; beyond that Sentry's SDK drops them

_ENGINE = str(Path(__file__).resolve().parent)
_FAILURES = {
    RunStatus.FAILED: "failed",
    RunStatus.TIMED_OUT: "timed out",
    RunStatus.CRASHED: "crashed",
    RunStatus.ABANDONED: "was abandoned",
}
_CHECKIN = {
    RunStatus.RUNNING: "in_progress",
    RunStatus.SUCCEEDED: "ok",
    RunStatus.FAILED: "error",
    RunStatus.TIMED_OUT: "error",
    RunStatus.CRASHED: "error",
    RunStatus.ABANDONED: "error",
    RunStatus.INTERRUPTED: "error",
}
_in_run = False  # True in a run's own process


def sentry_options(dsn: str, environment: str, release: str | None) -> dict[str, Any]:
    """The SDK's options for a job host (used again in each run's process)."""
    return {
        "dsn": dsn,
        "environment": environment,
        "release": release,
        # Runs are reported by the lifecycle, not from their log lines; the host's own
        # errors (a job module that fails to import, a failing state store) are events.
        "integrations": [LoggingIntegration(level=None, event_level=logging.ERROR)],
        "before_send": _drop_run_log_events,
        "shutdown_timeout": FLUSH_TIMEOUT,
        "transport_queue_size": QUEUE_SIZE,
    }


def init_sentry(dsn: str, environment: str, release: str | None) -> SentryReporter:
    """Start the SDK and return the reporter the host hands its run events to."""
    options = sentry_options(dsn, environment, release)
    sentry_sdk.init(**options)
    logging.getLogger("urllib3.connectionpool").addFilter(UnreachableSentry())
    return SentryReporter(options)


def _drop_run_log_events(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """A log record of a run (a lifecycle line, a job's own `logger.error`) is a breadcrumb, not
    an event: the run's failure event says it once."""
    record = hint.get("log_record")
    in_run = _in_run or current_run.get() is not None or getattr(record, "run_id", None) is not None
    return None if record is not None and in_run else event


class UnreachableSentry(logging.Filter):
    """urllib3 warns three times for each envelope it cannot deliver; while Sentry is down keep
    one such line every ten minutes, so the log says so without drowning in it."""

    interval = 600.0

    def __init__(self) -> None:
        super().__init__()
        self._last = -self.interval

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.threadName or not record.threadName.startswith("sentry-sdk"):
            return True
        now = time.monotonic()
        if now - self._last < self.interval:
            return False
        self._last = now
        record.msg = f"Sentry is unreachable (one line every 10 minutes while it is): {record.msg}"
        return True


class Breadcrumbs(logging.Handler):
    """Keeps the recent log lines of each slot (all its attempts), for its failure event."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(RunContextFilter())  # a thread-isolated job's records get the run's fields
        self._slots: OrderedDict[tuple[str, str], deque[dict[str, Any]]] = OrderedDict()
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        job, slot = getattr(record, "job", None), getattr(record, "slot", None)
        if getattr(record, "run_id", None) is None or not isinstance(job, str) or not isinstance(slot, str):
            return
        crumb: dict[str, Any] = {
            "type": "default",
            "category": record.name,
            "level": _level(record.levelno),
            "message": record.getMessage(),
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
        }
        data = {k: getattr(record, k) for k in ("event", "stream", "attempt", "run_id") if hasattr(record, k)}
        if data:
            crumb["data"] = data
        with self._guard:
            lines = self._slots.get((job, slot))
            if lines is None:
                lines = self._slots[(job, slot)] = deque(maxlen=MAX_BREADCRUMBS)
                while len(self._slots) > MAX_SLOTS_TRACKED:
                    self._slots.popitem(last=False)
            lines.append(crumb)

    def take(self, context: RunContext, *, keep: bool) -> list[dict[str, Any]]:
        """The slot's lines so far; forgotten unless `keep` (another attempt will follow)."""
        key = (context.job, context.slot.isoformat())
        with self._guard:
            lines = self._slots.get(key) if keep else self._slots.pop(key, None)
            return list(lines or ())


class SentryReporter(Reporter):
    """Turns run lifecycle events into Sentry events and Crons check-ins."""

    def __init__(self, options: dict[str, Any]):
        self.options = options
        self.jobs: Mapping[str, JobSpec] = {}
        self.breadcrumbs = Breadcrumbs()
        self.hostname = ""
        self._configs: dict[str, dict[str, Any]] = {}
        self._host_monitor = ""
        self._host_config: dict[str, Any] = {}
        self._missed: dict[str, list[RunEvent]] = {}

    # -- in the host's loop ----------------------------------------------

    def attach(self, jobs: Mapping[str, JobSpec], hostname: str, heartbeat_interval: float) -> None:
        self.jobs, self.hostname = jobs, hostname
        for name, spec in jobs.items():
            failures = 1 if spec.report_each_attempt else spec.retries + 1
            self._configs[name] = monitor_config(
                spec.schedule, timeout=spec.timeout, margin=spec.checkin_margin, failures=failures
            )
        self._host_monitor = slug_for(f"jobhost-{hostname}")
        self._host_config = heartbeat_config(heartbeat_interval)
        root = logging.getLogger()
        if self.breadcrumbs not in root.handlers:
            root.addHandler(self.breadcrumbs)

    def on_event(self, event: RunEvent) -> None:
        spec = self.jobs.get(event.context.job)
        self._check_in(event, spec)
        if event.status == RunStatus.MISSED:
            self._report_missed(event)
        elif event.status in _FAILURES and (event.final or (spec is not None and spec.report_each_attempt)):
            self._report_failure(event)
        if event.status.ended:
            self.breadcrumbs.take(event.context, keep=not event.final)

    def on_beat(self) -> None:
        capture_checkin(monitor_slug=self._host_monitor, status="ok", monitor_config=self._host_config)

    def close(self) -> None:
        """Send what is queued, waiting at most FLUSH_TIMEOUT, and stop the sender (so the SDK's
        own exit hook does not wait again)."""
        sentry_sdk.get_client().close(timeout=FLUSH_TIMEOUT)

    # -- where the job runs ----------------------------------------------

    @contextlib.contextmanager
    def job_scope(self, context: RunContext, *, forked: bool) -> Iterator[None]:
        """The job's own `sentry_sdk.capture_*` calls carry the run's tags. A forked run gets a
        client of its own (the host's connections must not be shared) and sends before it exits."""
        global _in_run
        if forked:
            _in_run = True
            sentry_sdk.init(**self.options)
        with sentry_sdk.isolation_scope() as scope:
            for key, value in self._tags(context).items():
                scope.set_tag(key, value)
            try:
                yield
            finally:
                if forked:
                    sentry_sdk.flush(timeout=CHILD_FLUSH_TIMEOUT)

    def describe_exception(self, exc: BaseException) -> dict[str, Any] | None:
        """Sentry's form of the exception (frames, source lines, locals), without the frames of
        the engine that called the job."""
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_ENGINE):
            tb = tb.tb_next
        if tb is not None:
            exc = exc.with_traceback(tb)
        event, _ = event_from_exception(exc, client_options=sentry_sdk.get_client().options)
        return serialize(event)

    # -- helpers ---------------------------------------------------------

    def _check_in(self, event: RunEvent, spec: JobSpec | None) -> None:
        if spec is None or spec.monitor is None or not event.scheduled:
            return
        config = self._configs.get(spec.name)
        if event.status == RunStatus.MISSED:
            if _last_of_batch(event):
                capture_checkin(monitor_slug=spec.monitor, status="error", monitor_config=config)
            return
        status = _CHECKIN.get(event.status)
        if status is None:
            return
        duration = None if event.duration_ms is None else event.duration_ms / 1000
        capture_checkin(
            monitor_slug=spec.monitor,
            check_in_id=event.context.run_id,
            status=status,
            duration=duration,
            monitor_config=config,
        )

    def _report_failure(self, event: RunEvent) -> None:
        job, status = event.context.job, event.status
        payload: dict[str, Any] = {}
        if event.exception and status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
            payload = dict(event.exception)
        values = (payload.get("exception") or {}).get("values") or []
        fingerprint = ["jobhost", job, str(status)]
        if status == RunStatus.TIMED_OUT and values:
            # The frames say where the job was when it was killed; the title says why.
            values[-1] = {**values[-1], "type": "JobTimedOut", "value": event.reason, "module": None}
        elif status == RunStatus.FAILED and values:
            fingerprint.append(str(values[-1].get("type")))
        if not values:
            payload = {"message": f"{job} {_FAILURES[status]}: {event.reason}"}
        self._send(payload, event, fingerprint, "error")

    def _report_missed(self, event: RunEvent) -> None:
        """Missed slots found at once (a host down for hours) make one event, not one each."""
        batch = self._missed.setdefault(event.context.job, [])
        batch.append(event)
        if not _last_of_batch(event):
            return
        del self._missed[event.context.job]
        first, last = batch[0].context.slot, batch[-1].context.slot
        reasons = sorted({e.reason for e in batch})
        span = first.isoformat() if len(batch) == 1 else f"{first.isoformat()} to {last.isoformat()}"
        count = "1 slot" if len(batch) == 1 else f"{len(batch)} slots"
        payload = {"message": f"{event.context.job} missed {count} ({span}): {'; '.join(reasons)}"}
        extra = {"missed_slots": len(batch), "first_slot": first.isoformat(), "last_slot": last.isoformat()}
        self._send(payload, event, ["jobhost", event.context.job, "missed"], "warning", extra=extra)

    def _send(
        self,
        payload: dict[str, Any],
        event: RunEvent,
        fingerprint: list[str],
        level: str,
        *,
        extra: dict[str, Any] | None = None,
    ) -> None:
        context = event.context
        run = {**context.fields(), "status": str(event.status), "reason": event.reason, "host": self.hostname}
        if event.duration_ms is not None:
            run["duration_ms"] = event.duration_ms
        if event.retry_at is not None:
            run["retry_at"] = event.retry_at.isoformat()
        spec = self.jobs.get(context.job)
        if spec is not None:
            run["schedule"] = spec.schedule.describe()
            run["defined_at"] = f"{spec.file}:{spec.line}"
        payload.update(
            level=level,
            logger="jobhost",
            transaction=context.job,
            fingerprint=fingerprint,
            tags={**self._tags(context), "status": str(event.status)},
            contexts={"run": {**run, **(extra or {})}},
            breadcrumbs={"values": self.breadcrumbs.take(context, keep=True)},
        )
        sentry_sdk.capture_event(payload)

    def _tags(self, context: RunContext) -> dict[str, str]:
        return {
            "job": context.job,
            "run_id": context.run_id,
            "slot": context.slot.isoformat(),
            "attempt": str(context.attempt),
            "host": self.hostname,
        }


def _last_of_batch(event: RunEvent) -> bool:
    return event.batch is None or event.batch[0] == event.batch[1] - 1


def _level(levelno: int) -> str:
    if levelno >= logging.CRITICAL:
        return "fatal"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    return "info" if levelno >= logging.INFO else "debug"
