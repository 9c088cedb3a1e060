"""Sentry Crons monitors made from a job's schedule, and the rules of their slugs: pure
functions, no SDK (every job definition checks its slug here, with or without Sentry).

Sentry checks a monitor against its own copy of the schedule, so the copy must
say the same thing as the slots the host computes. A cron job keeps its
expression. ``every(N).<unit>`` becomes an equivalent crontab where one exists
(sub-day intervals are counted from the Unix epoch, so they are crontabs in
UTC when N divides the hour or the day) and an interval otherwise.

The `monitor=` option is part of a job's definition, so its rules live here, beside the
definition; they reach the registry as MONITOR_RULES, which jobhost/__init__.py installs
for every registry. The Sentry reporter reads the monitors made here and knows nothing
else of the definition's checks.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from jobhost.definition.registry import JobRules
from jobhost.definition.schedules import CronSchedule, IntervalSchedule, Schedule
from jobhost.definition.spec import DEFAULT_MARGIN, JobSpec
from jobhost.errors import JobDefinitionError

SLUG_MAX = 50  # Sentry's limit
SLUG = re.compile(r"^(?![0-9]+$)[a-z0-9_-]{1,50}$")
MAX_RUNTIME_CEILING = 40320  # minutes (28 days), Sentry's largest max_runtime
_DAY = 86400


def slug_for(name: str, *, unique: bool = False) -> str:
    """The monitor slug for a job name: lower case, `-` for anything Sentry refuses, at most 50
    characters. A long name, or one whose slug another job has (`unique`), keeps a hash of the
    whole name, so the two stay apart."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-") or "job"
    if slug.isdigit():
        slug = f"job-{slug}"
    if len(slug) > SLUG_MAX or unique:
        import hashlib  # here: OpenSSL's library is megabytes a host without Sentry has no use for

        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        slug = f"{slug[: SLUG_MAX - 9].rstrip('-')}-{digest}"
    return slug


def check_slug(value: object) -> str | None:
    """A `monitor=` option given by hand: its slug, or None for False (no monitor)."""
    if value is None or value is False:
        return None
    if not isinstance(value, str) or not SLUG.match(value):
        raise ValueError(
            f"monitor={value!r} must be a Sentry monitor slug (lower-case letters, digits, '-' or '_', at most "
            "50, not only digits), or False for no monitor"
        )
    return value


def monitor_option(value: object, job: str) -> str | None:
    """The `monitor=` option of `job`: its slug given by hand, None for False, or one derived from the name."""
    return slug_for(job) if value is None else check_slug(value)


def shared_monitors(jobs: dict[str, JobSpec]) -> list[JobDefinitionError]:
    """Two jobs checking in to one Sentry monitor would hide each other's failures. A slug
    derived from a name that another job's slug already has ('etl.daily', 'etl-daily') gets
    the name's hash (in `jobs`, in place); two slugs given with monitor= are a definition error."""
    problems: list[JobDefinitionError] = []
    owners: dict[str, JobSpec] = {}
    for name, spec in list(jobs.items()):
        if spec.monitor is None:
            continue
        other = owners.setdefault(spec.monitor, spec)
        if other is spec:
            continue
        if spec.monitor == slug_for(name):  # derived, not chosen: make it unique
            unique = slug_for(name, unique=True)
            jobs[name] = owners[unique] = dataclasses.replace(spec, monitor=unique)
            continue
        problems.append(
            JobDefinitionError(
                f"its Sentry monitor slug {spec.monitor!r} is also the job {other.name!r}'s "
                f"({other.file}:{other.line}); give one of them monitor='another-slug'",
                job=spec.name,
                file=spec.file,
                line=spec.line,
            )
        )
    return problems


MONITOR_RULES = JobRules(options={"monitor": monitor_option}, validate=shared_monitors)


def schedule_config(schedule: Schedule) -> dict[str, Any]:
    """Sentry's `schedule` and `timezone` for a job's schedule."""
    if isinstance(schedule, CronSchedule):
        return {"schedule": {"type": "crontab", "value": schedule.expression}, "timezone": schedule.zone.key}
    if isinstance(schedule, IntervalSchedule):
        return _interval_config(schedule)
    raise TypeError(f"no monitor schedule for {schedule!r}")


def monitor_config(
    schedule: Schedule, *, timeout: float | None, margin: float = DEFAULT_MARGIN, failures: int = 1
) -> dict[str, Any]:
    """The whole `monitor_config` sent with each check-in.

    `failures` is how many failed check-ins in a row open a Sentry issue: a job with
    retries opens one only when every attempt of a slot has failed.
    """
    config = schedule_config(schedule)
    config["checkin_margin"] = max(1, math.ceil(margin / 60))
    # The host kills a run at its timeout and then checks in; leave it a minute to do so.
    runtime = MAX_RUNTIME_CEILING if timeout is None else math.ceil(timeout / 60) + 1
    config["max_runtime"] = min(runtime, MAX_RUNTIME_CEILING)
    config["failure_issue_threshold"] = max(1, failures)
    config["recovery_threshold"] = 1
    return config


def heartbeat_config(interval: float) -> dict[str, Any]:
    """The host's own monitor: a check-in every heartbeat, missed when the loop dies or stalls."""
    minutes = max(1, math.ceil(interval / 60))
    return {
        "schedule": {"type": "interval", "value": minutes, "unit": "minute"},
        "checkin_margin": max(1, minutes),
        "max_runtime": 1,
        "failure_issue_threshold": 1,
        "recovery_threshold": 1,
    }


def _interval_config(schedule: IntervalSchedule) -> dict[str, Any]:
    at = schedule.at
    minute, hour = (at.minute, at.hour) if at is not None else (0, 0)
    if schedule.unit == "seconds":
        period = schedule.interval
        if period < 60:  # Sentry counts in minutes; there is a run in every minute
            return _crontab("* * * * *", "UTC")
        return _elapsed(period, 0)
    if schedule.unit == "minutes":
        return _elapsed(schedule.interval * 60, 0)
    if schedule.unit == "hours":
        return _elapsed(schedule.interval * 3600, (at.minute * 60 if at is not None else 0))
    zone = schedule.zone.key
    if schedule.unit == "days" and schedule.interval == 1:
        return _crontab(f"{minute} {hour} * * *", zone)
    if schedule.unit == "weeks" and schedule.interval == 1:
        weekday = (schedule.weekday or 0) + 1  # Monday is 1 in cron
        return _crontab(f"{minute} {hour} * * {weekday % 7}", zone)
    return {"schedule": {"type": "interval", "value": schedule.interval, "unit": schedule.unit[:-1]}, "timezone": zone}


def _elapsed(period: int, offset: int) -> dict[str, Any]:
    """Sub-day slots, at `offset` seconds past multiples of `period` since the epoch (UTC)."""
    minutes = period // 60
    if period % 60 == 0 and 3600 % period == 0 and period < 3600:
        first = (offset // 60) % minutes
        field = "*" if minutes == 1 else f"{first}-59/{minutes}" if first else f"*/{minutes}"
        return _crontab(f"{field} * * * *", "UTC")
    if period % 3600 == 0 and _DAY % period == 0:
        hours = period // 3600
        first_hour = (offset // 3600) % hours
        hour_field = "*" if hours == 1 else f"{first_hour}-23/{hours}" if first_hour else f"*/{hours}"
        return _crontab(f"{(offset // 60) % 60} {hour_field} * * *", "UTC")
    if period % 3600 == 0:
        return {"schedule": {"type": "interval", "value": period // 3600, "unit": "hour"}, "timezone": "UTC"}
    return {"schedule": {"type": "interval", "value": math.ceil(period / 60), "unit": "minute"}, "timezone": "UTC"}


def _crontab(expression: str, zone: str) -> dict[str, Any]:
    return {"schedule": {"type": "crontab", "value": expression}, "timezone": zone}
