"""The host's Sentry reporter: run events become failure events and check-ins, and the job's own
`sentry_sdk` calls carry the run's tags. It composes the parts of this package."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import sentry_sdk

from jobhost.context import RunContext
from jobhost.definition.spec import JobSpec
from jobhost.observe.events import Reporter, RunEvent
from jobhost.observe.sentry import sdk
from jobhost.observe.sentry.breadcrumbs import Breadcrumbs
from jobhost.observe.sentry.crons import CheckIns
from jobhost.observe.sentry.events import FailureEvents, describe_exception, run_tags
from jobhost.outcomes import RunStatus

logger = logging.getLogger("jobhost.sentry")


def init_sentry(dsn: str, environment: str, release: str | None) -> SentryReporter:
    """Start the SDK and return the reporter the host hands its run events to."""
    options = sdk.sentry_options(dsn, environment, release)
    sdk.start_in_host(options)
    return SentryReporter(options)


class SentryReporter(Reporter):
    """Turns run lifecycle events into Sentry events and Crons check-ins."""

    def __init__(self, options: dict[str, Any]):
        self.options = options
        self.jobs: Mapping[str, JobSpec] = {}
        self.hostname = ""
        self.breadcrumbs = Breadcrumbs()
        self.check_ins = CheckIns()
        self.events = FailureEvents(self.breadcrumbs)

    # -- in the host's loop ----------------------------------------------

    def attach(self, jobs: Mapping[str, JobSpec], hostname: str, heartbeat_interval: float) -> None:
        self.jobs, self.hostname = jobs, hostname
        self.check_ins.attach(jobs, hostname, heartbeat_interval)
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
        self.check_ins.warn_where_days_differ()

    def on_event(self, event: RunEvent) -> None:
        spec = self.jobs.get(event.context.job)
        quiet = bool(event.extra.get("after_pause"))  # slots a pause gave up, on purpose
        if not quiet:
            self.check_ins.check_in(event, spec)
        if event.status == RunStatus.MISSED and not quiet:
            self.events.missed(event, spec, self.hostname)
        elif event.status.failure is not None and (event.final or (spec is not None and spec.report_each_attempt)):
            self.events.failure(event, spec, self.hostname)
        if event.status.ended and event.final:
            self.breadcrumbs.forget(event.context)

    def on_beat(self) -> None:
        self.check_ins.beat()

    def close(self) -> None:
        """Send what is queued, waiting at most FLUSH_TIMEOUT, and stop the sender (so the SDK's
        own exit hook does not wait again)."""
        sentry_sdk.get_client().close(timeout=sdk.FLUSH_TIMEOUT)

    def alone(self) -> bool:
        """In a run's keeper: a client of its own (the host's connections and the locks its threads
        held at the fork are not the keeper's), and the run's lines as breadcrumbs again."""
        sdk.start_in_run(self.options)
        root = logging.getLogger()
        if self.breadcrumbs not in root.handlers:
            root.addHandler(self.breadcrumbs)
        return True

    # -- where the job runs ----------------------------------------------

    @contextlib.contextmanager
    def job_scope(self, context: RunContext, *, forked: bool) -> Iterator[None]:
        """The job's own `sentry_sdk.capture_*` calls carry the run's tags. A forked run gets a
        client of its own (the host's connections must not be shared) and sends before it exits."""
        if forked:
            sdk.start_in_run(self.options)
        with sentry_sdk.isolation_scope() as scope:
            for key, value in run_tags(context, self.hostname).items():
                scope.set_tag(key, value)
            if context.params is not None:  # what a person gave the run, beside what the job raises
                scope.set_context("params", dict(context.params))
            try:
                yield
            finally:
                if forked:
                    sentry_sdk.flush(timeout=sdk.CHILD_FLUSH_TIMEOUT)

    def describe_exception(self, exc: BaseException) -> dict[str, Any] | None:
        """Sentry's form of the exception (frames, source lines, locals), without the frames of
        the engine that called the job."""
        return describe_exception(exc)
