"""Run lifecycle events: the one place logging, Sentry and metrics observe runs.

The loop emits a `RunEvent` when a run starts and when it ends (or is skipped,
missed, interrupted ...). Its log line (logs.py) is written first, then each `Reporter`
is told, in order; a broken reporter is logged and never takes the host down.
A reporter also gets the loop's heartbeat, a bounded flush at the end, and two
hooks that run where the job runs (in its process or thread).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobhost.context import RunContext
from jobhost.observe.logs import log_event
from jobhost.outcomes import RunStatus

if TYPE_CHECKING:
    from jobhost.definition.spec import JobSpec


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
    exception: dict[str, Any] | None = None  # the job's exception as structured data (see Outcome)
    scheduled: bool = True  # False for a run started by hand (`run`, `backfill`)
    batch: tuple[int, int] | None = None  # (index, size) of a missed slot among those found at once

    @property
    def event(self) -> str:
        return "run_retrying" if self.retry_at is not None else self.status.event

    @property
    def final(self) -> bool:
        """True unless another attempt of the same slot is scheduled (for observers that report failures)."""
        return self.retry_at is None


class Reporter:
    """Something besides the log that observes runs (Sentry, metrics); override what you need.

    `attach`, `on_event`, `on_beat` and `close` run in the host's loop and must not
    block it. `job_scope` and `describe_exception` run where the job runs: in its
    forked process (`forked=True`) or in its thread.
    """

    def attach(self, jobs: Mapping[str, JobSpec], hostname: str, heartbeat_interval: float) -> None:
        """The host's jobs and name, given once before the first event."""

    def on_event(self, event: RunEvent) -> None:
        """Something happened to a run (after its log line was written)."""

    def on_beat(self) -> None:
        """The loop's heartbeat: it is alive and not stalled."""

    def close(self) -> None:
        """The host is stopping: send what is pending, within a bounded time."""

    def alone(self) -> bool:
        """In a run's keeper, which reports the run's end after the host has gone (a fork of the
        host): set up what this reporter needs there, or say False to be left out there."""
        return False

    @contextlib.contextmanager
    def job_scope(self, context: RunContext, *, forked: bool) -> Iterator[None]:
        """Wraps the call of the job."""
        yield

    def describe_exception(self, exc: BaseException) -> dict[str, Any] | None:
        """The job's exception as structured data, handed to `on_event` through the outcome."""
        return None


class Lifecycle:
    """Writes each RunEvent's log line, then hands the event to every reporter."""

    def __init__(self, reporters: Iterable[Reporter] = ()):
        self.reporters = list(reporters)

    def attach(self, jobs: Mapping[str, JobSpec], hostname: str, heartbeat_interval: float) -> None:
        self._each("attach", jobs, hostname, heartbeat_interval)

    def emit(self, event: RunEvent) -> None:
        log_event(event)
        self._each("on_event", event)

    def beat(self) -> None:
        self._each("on_beat")

    def close(self) -> None:
        self._each("close")

    def alone(self) -> Lifecycle:
        """The lifecycle of a run's keeper: the reporters that report from there, set up for it."""
        kept = []
        for reporter in self.reporters:
            try:
                if reporter.alone():
                    kept.append(reporter)
            except Exception:  # a broken reporter must not take the run down
                logging.getLogger("jobhost").exception("a run reporter failed to set up in the keeper")
        return Lifecycle(kept)

    @contextlib.contextmanager
    def job_scope(self, context: RunContext, *, forked: bool) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for reporter in self.reporters:
                try:
                    stack.enter_context(reporter.job_scope(context, forked=forked))
                except Exception:  # the job runs even if a reporter cannot watch it
                    logging.getLogger("jobhost").exception("a run reporter failed to set up the run")
            yield

    def describe_exception(self, exc: BaseException) -> dict[str, Any] | None:
        for reporter in self.reporters:
            detail = reporter.describe_exception(exc)
            if detail is not None:
                return detail
        return None

    def _each(self, method: str, *args: Any) -> None:
        for reporter in self.reporters:
            try:
                getattr(reporter, method)(*args)
            except Exception:  # a broken reporter must not take runs down
                logging.getLogger("jobhost").exception("a run reporter failed in %s", method)
