"""Sentry events of runs: a failure (with the job's exception in Sentry's form), the missed
slots found at once as one event, and the refused start of a host. Each is grouped by a
fingerprint per job and kind, and cut to fit under Sentry's size limit."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import sentry_sdk
from sentry_sdk.serializer import serialize
from sentry_sdk.utils import event_from_exception

from jobhost.context import RunContext
from jobhost.observe.events import RunEvent
from jobhost.observe.sentry.sdk import FLUSH_TIMEOUT, MAX_VALUE, sentry_options
from jobhost.outcomes import RunStatus

if TYPE_CHECKING:
    from sentry_sdk._types import Event

    from jobhost.definition.spec import JobSpec
    from jobhost.observe.sentry.breadcrumbs import Breadcrumbs

MAX_EVENT_BYTES = 800_000  # Sentry refuses events over 1 MB; past this, locals go, then old frames

_ENGINE = str(Path(__file__).resolve().parents[2])  # the jobhost package: the frames that called the job


class FailureEvents:
    """The events of failed runs and missed slots, with the run's context, tags and breadcrumbs."""

    def __init__(self, breadcrumbs: Breadcrumbs):
        self.breadcrumbs = breadcrumbs
        self._missed: dict[str, list[RunEvent]] = {}

    def failure(self, event: RunEvent, spec: JobSpec | None, hostname: str) -> None:
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
        self._send(payload, event, spec, hostname, fingerprint, "error")

    def missed(self, event: RunEvent, spec: JobSpec | None, hostname: str) -> None:
        """Missed slots found at once (a host down for hours) make one event, not one each."""
        batch = self._missed.setdefault(event.context.job, [])
        batch.append(event)
        if not last_of_batch(event):
            return
        del self._missed[event.context.job]
        first, last = batch[0].context.slot, batch[-1].context.slot
        reasons = sorted({e.reason for e in batch})
        span = first.isoformat() if len(batch) == 1 else f"{first.isoformat()} to {last.isoformat()}"
        count = "1 slot" if len(batch) == 1 else f"{len(batch)} slots"
        payload = {"message": f"{event.context.job} missed {count} ({span}): {'; '.join(reasons)}"}
        extra = {"missed_slots": len(batch), "first_slot": first.isoformat(), "last_slot": last.isoformat()}
        self._send(payload, event, spec, hostname, ["jobhost", event.context.job, "missed"], "warning", extra=extra)

    def _send(
        self,
        payload: dict[str, Any],
        event: RunEvent,
        spec: JobSpec | None,
        hostname: str,
        fingerprint: list[str],
        level: str,
        *,
        extra: dict[str, Any] | None = None,
    ) -> None:
        context = event.context
        run = {**context.fields(), "status": str(event.status), "reason": event.reason, "host": hostname}
        if event.duration_ms is not None:
            run["duration_ms"] = event.duration_ms
        if event.retry_at is not None:
            run["retry_at"] = event.retry_at.isoformat()
        if spec is not None:
            run["schedule"] = spec.schedule.describe()
            run["defined_at"] = f"{spec.file}:{spec.line}"
        payload.update(
            level=level,
            logger="jobhost",
            transaction=context.job,
            fingerprint=fingerprint,
            tags={**run_tags(context, hostname), "status": str(event.status)},
            contexts={"run": {**run, **(extra or {})}},
            breadcrumbs={"values": self.breadcrumbs.take(context)},
        )
        sentry_sdk.capture_event(cast("Event", _fit(payload)))  # the SDK's TypedDict, built as a dict


def describe_exception(exc: BaseException) -> dict[str, Any] | None:
    """Sentry's form of the exception (frames, source lines, locals), without the frames of
    the engine that called the job."""
    mechanism = {"type": "jobhost", "handled": False}  # the job did not handle it
    event, _ = event_from_exception(exc, client_options=sentry_sdk.get_client().options, mechanism=mechanism)
    for value in event["exception"]["values"]:
        frames = (value.get("stacktrace") or {}).get("frames") or []
        own = [f for f in frames if not str(f.get("abs_path") or "").startswith(_ENGINE)]
        if own and value.get("stacktrace"):
            value["stacktrace"]["frames"] = own
    return serialize(cast(dict[str, Any], event))


def report_refused_start(
    dsn: str, environment: str, release: str | None, hostname: str, reason: str, problems: Sequence[str]
) -> None:
    """One event for a host that refused to start, with every problem, sent before it exits
    (waiting FLUSH_TIMEOUT at most): under supervisord, each start it refuses is one event."""
    sentry_sdk.init(**sentry_options(dsn, environment, release))
    lines = [f"the job host {hostname} refused to start: {reason}", *problems]
    sentry_sdk.capture_event(
        {
            "message": cut("\n".join(lines)),
            "level": "fatal",
            "logger": "jobhost",
            "fingerprint": ["jobhost", "refused-start", hostname],
            "tags": {"host": hostname},
            "contexts": {"start": {"reason": reason, "problems": list(problems)}},
        }
    )
    sentry_sdk.get_client().close(timeout=FLUSH_TIMEOUT)


def run_tags(context: RunContext, hostname: str) -> dict[str, str]:
    """The tags of a run's events, and of what the job captures itself."""
    return {
        "job": context.job,
        "run_id": context.run_id,
        "slot": context.slot.isoformat(),
        "attempt": str(context.attempt),
        "host": hostname,
    }


def last_of_batch(event: RunEvent) -> bool:
    """Is this the last of the missed slots found at once (or not one of a batch)?"""
    return event.batch is None or event.batch[0] == event.batch[1] - 1


def cut(text: str) -> str:
    """A text no longer than the SDK keeps of a value (MAX_VALUE)."""
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


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
