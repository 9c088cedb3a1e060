"""Sentry Crons check-ins: one monitor per job, checked in from its runs, and one for the host's
own heartbeat (missed when the loop dies or stalls). The monitors' configs are `monitors.py`'s."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from sentry_sdk.crons import capture_checkin

from jobhost.definition.monitors import heartbeat_config, monitor_config, slug_for
from jobhost.definition.spec import JobSpec
from jobhost.observe.events import RunEvent
from jobhost.observe.sentry.events import last_of_batch
from jobhost.outcomes import RunStatus

if TYPE_CHECKING:
    from sentry_sdk._types import MonitorConfig

logger = logging.getLogger("jobhost.sentry")


class CheckIns:
    """The check-ins of each job's monitor, sent with its config, and of the host's heartbeat."""

    def __init__(self) -> None:
        self.jobs: Mapping[str, JobSpec] = {}
        self._configs: dict[str, MonitorConfig] = {}
        self._host_monitor = ""
        self._host_config: MonitorConfig = {}

    def attach(self, jobs: Mapping[str, JobSpec], hostname: str, heartbeat_interval: float) -> None:
        self.jobs = jobs
        for name, spec in jobs.items():
            failures = 1 if spec.report_each_attempt else spec.retries + 1
            config = monitor_config(spec.schedule, timeout=spec.timeout, margin=spec.checkin_margin, failures=failures)
            self._configs[name] = cast("MonitorConfig", config)  # the SDK's TypedDict of the same fields
        self._host_monitor = slug_for(f"jobhost-{hostname}")
        self._host_config = cast("MonitorConfig", heartbeat_config(heartbeat_interval))

    def warn_where_days_differ(self) -> None:
        """Say which cron jobs Sentry reads otherwise than the host (see `_cron_days_differ`)."""
        for name, spec in self.jobs.items():
            if spec.monitor is not None and _cron_days_differ(spec):
                logger.warning(
                    "job %s: Sentry reads both day fields of %r as 'either', cron as 'both'; its monitor may "
                    "report missed check-ins on days the job is not due",
                    name,
                    getattr(spec.schedule, "expression", ""),
                    extra={"event": "monitor_schedule_differs", "job_name": name},
                )

    def check_in(self, event: RunEvent, spec: JobSpec | None) -> None:
        if spec is None or spec.monitor is None or not event.scheduled:
            return
        config = self._configs.get(spec.name)
        if event.status == RunStatus.MISSED:
            if last_of_batch(event):
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

    def beat(self) -> None:
        capture_checkin(monitor_slug=self._host_monitor, status="ok", monitor_config=self._host_config)


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
