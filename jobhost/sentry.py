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
import copy
import datetime as dt
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import sentry_sdk
from sentry_sdk.crons import capture_checkin
from sentry_sdk.integrations.atexit import AtexitIntegration
from sentry_sdk.integrations.logging import LoggingIntegration, ignore_logger
from sentry_sdk.serializer import serialize
from sentry_sdk.transport import HttpTransport
from sentry_sdk.utils import event_from_exception

from jobhost.context import RunContext, RunContextFilter, current_run
from jobhost.definition.spec import JobSpec
from jobhost.monitors import heartbeat_config, monitor_config, slug_for
from jobhost.observe.events import Reporter, RunEvent
from jobhost.outcomes import RunStatus
from jobhost.sentry_scrubber import SecretScrubber

FLUSH_TIMEOUT = 2.0  # seconds the host waits for Sentry when it stops (inside supervisord's stopwaitsecs)
CHILD_FLUSH_TIMEOUT = 2.0  # seconds a run's process waits to send what the job itself captured
MAX_BREADCRUMBS = 100  # log lines of a slot kept for its failure event
MAX_SLOTS_TRACKED = 1000  # slots whose log lines are kept at once
QUEUE_SIZE = 1000  # events and check-ins waiting to be sent; beyond that Sentry's SDK drops them
MAX_VALUE = 1024  # characters of a local variable or a breadcrumb kept in an event
MAX_EVENT_BYTES = 800_000  # Sentry refuses events over 1 MB; past this, locals go, then old frames
LOST_LINE_INTERVAL = 600.0  # seconds between two log lines saying events are being lost

_ENGINE = str(Path(__file__).resolve().parent)
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


def init_sentry(dsn: str, environment: str, release: str | None) -> SentryReporter:
    """Start the SDK and return the reporter the host hands its run events to."""
    options = sentry_options(dsn, environment, release)
    sentry_sdk.init(**options)
    for name in ("jobhost.run", "jobhost.output"):  # lifecycle and output lines: the reporter's job
        ignore_logger(name)
    logging.getLogger("urllib3.connectionpool").addFilter(_quiet_sentry_retries)
    return SentryReporter(options)


def report_refused_start(
    dsn: str, environment: str, release: str | None, hostname: str, reason: str, problems: Sequence[str]
) -> None:
    """One event for a host that refused to start, with every problem, sent before it exits
    (waiting FLUSH_TIMEOUT at most): under supervisord, each start it refuses is one event."""
    sentry_sdk.init(**sentry_options(dsn, environment, release))
    lines = [f"the job host {hostname} refused to start: {reason}", *problems]
    sentry_sdk.capture_event(
        {
            "message": _cut("\n".join(lines)),
            "level": "fatal",
            "logger": "jobhost",
            "fingerprint": ["jobhost", "refused-start", hostname],
            "tags": {"host": hostname},
            "contexts": {"start": {"reason": reason, "problems": list(problems)}},
        }
    )
    sentry_sdk.get_client().close(timeout=FLUSH_TIMEOUT)


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
        "message": _cut(record.getMessage()),
        "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
    }
    data = {k: getattr(record, k) for k in ("event", "stream", "attempt", "run_id") if hasattr(record, k)}
    if data:
        crumb["data"] = data
    return crumb


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
        client = sentry_sdk.get_client().options
        logger.info(
            "reporting to Sentry (environment %s, release %s)",
            client.get("environment"),
            client.get("release"),
            extra={"event": "sentry_on", "environment": client.get("environment"), "release": client.get("release")},
        )
        for name, spec in jobs.items():
            if spec.monitor is not None and _cron_days_differ(spec):
                logger.warning(
                    "job %s: Sentry reads both day fields of %r as 'either', cron as 'both'; its monitor may "
                    "report missed check-ins on days the job is not due",
                    name,
                    getattr(spec.schedule, "expression", ""),
                    extra={"event": "monitor_schedule_differs", "job_name": name},
                )

    def on_event(self, event: RunEvent) -> None:
        spec = self.jobs.get(event.context.job)
        quiet = bool(event.extra.get("after_pause"))  # slots a pause gave up, on purpose
        if not quiet:
            self._check_in(event, spec)
        if event.status == RunStatus.MISSED and not quiet:
            self._report_missed(event)
        elif event.status.failure is not None and (event.final or (spec is not None and spec.report_each_attempt)):
            self._report_failure(event)
        if event.status.ended and event.final:
            self.breadcrumbs.forget(event.context)

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
        mechanism = {"type": "jobhost", "handled": False}  # the job did not handle it
        event, _ = event_from_exception(exc, client_options=sentry_sdk.get_client().options, mechanism=mechanism)
        for value in event["exception"]["values"]:
            frames = (value.get("stacktrace") or {}).get("frames") or []
            own = [f for f in frames if not str(f.get("abs_path") or "").startswith(_ENGINE)]
            if own and value.get("stacktrace"):
                value["stacktrace"]["frames"] = own
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
        if event.status == RunStatus.SKIPPED and event.extra.get("paused"):
            # Paused on purpose: the monitor must not page for it.
            capture_checkin(monitor_slug=spec.monitor, status="ok", monitor_config=config)
            return
        status = event.status.check_in
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
            payload = copy.deepcopy(event.exception)  # changed below; the event is shared with other reporters
        values = (payload.get("exception") or {}).get("values") or []
        fingerprint = ["jobhost", job, str(status)]
        if status == RunStatus.TIMED_OUT and values:
            # The frames say where the job was when it was killed; the title says why.
            values[-1] = {**values[-1], "type": "JobTimedOut", "value": event.reason, "module": None}
        elif status == RunStatus.FAILED and values:
            fingerprint.append(str(values[-1].get("type")))
        if not values:
            payload = {"message": f"{job} {status.failure}: {event.reason}"}
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
            breadcrumbs={"values": self.breadcrumbs.take(context)},
        )
        sentry_sdk.capture_event(_fit(payload))

    def _tags(self, context: RunContext) -> dict[str, str]:
        return {
            "job": context.job,
            "run_id": context.run_id,
            "slot": context.slot.isoformat(),
            "attempt": str(context.attempt),
            "host": self.hostname,
        }


def _fit(event: dict[str, Any]) -> dict[str, Any]:
    """Keep an event under Sentry's size limit: drop locals, then all but the innermost frames."""
    if len(json.dumps(event, default=repr)) <= MAX_EVENT_BYTES:
        return event
    values = (event.get("exception") or {}).get("values") or []
    for value in values:
        for frame in (value.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    if len(json.dumps(event, default=repr)) > MAX_EVENT_BYTES:
        for value in values:
            if value.get("stacktrace"):
                value["stacktrace"]["frames"] = value["stacktrace"]["frames"][-50:]
    return event


def _cut(text: str) -> str:
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _cron_days_differ(spec: JobSpec) -> bool:
    """Does Sentry (croniter) read this cron job's days otherwise than cron does? Cron ANDs the
    day-of-month and day-of-week fields when one of them starts with '*'; croniter ORs them."""
    expression = getattr(spec.schedule, "expression", None)
    if expression is None:
        return False
    fields = expression.split()
    day, weekday = fields[2], fields[4]
    restricted = day not in ("*", "?") and weekday not in ("*", "?")
    return restricted and (day.startswith("*") or weekday.startswith("*"))


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
