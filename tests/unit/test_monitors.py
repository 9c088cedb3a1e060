"""Sentry Crons monitor configs: the schedule Sentry checks must be the one the host runs."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from jobhost.definition.monitors import check_slug, heartbeat_config, monitor_config, schedule_config, slug_for
from jobhost.definition.registry import Registry
from jobhost.definition.schedules import cron

LONDON = ZoneInfo("Europe/London")


@pytest.fixture
def registry() -> Registry:
    return Registry(default_zone=LONDON)


def _schedule(registry: Registry, when: object):
    @registry.job(when, name=f"job{len(registry.jobs)}")
    def job() -> None: ...

    return registry.jobs[f"job{len(registry.jobs) - 1}"].schedule


def _slots(schedule, start: dt.datetime, count: int) -> list[dt.datetime]:
    found, slot = [], start
    for _ in range(count):
        slot = schedule.next_slot(slot)
        found.append(slot.astimezone(dt.UTC).replace(second=0))
    return found


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda r: r.every(10).minutes, "*/10 * * * *"),
        (lambda r: r.every(15).minutes.at(":30"), "*/15 * * * *"),
        (lambda r: r.every().minute, "* * * * *"),
        (lambda r: r.every(2).hours, "0 */2 * * *"),
        (lambda r: r.every(3).hours.at("20:00"), "20 */3 * * *"),
        (lambda r: r.every().hour.at(":45"), "45 * * * *"),
        (lambda r: r.every(6).hours, "0 */6 * * *"),
        (lambda r: r.every().day.at("02:30"), "30 2 * * *"),
        (lambda r: r.every().monday.at("06:00"), "0 6 * * 1"),
        (lambda r: r.every().sunday.at("23:15"), "15 23 * * 0"),
        (lambda r: r.every().week, "0 0 * * 1"),
    ],
)
def test_intervals_become_the_crontab_that_has_the_same_slots(registry: Registry, build, expected: str):
    schedule = _schedule(registry, build(registry))
    config = schedule_config(schedule)
    assert config["schedule"] == {"type": "crontab", "value": expected}
    zone = ZoneInfo(config["timezone"])
    start = dt.datetime(2026, 3, 20, 0, 7, tzinfo=dt.UTC)  # across the spring change in London
    ours = _slots(schedule, start, 200)
    theirs = CronSim(expected, start.astimezone(zone))
    assert [next(theirs).astimezone(dt.UTC) for _ in ours] == ours


def test_sub_day_intervals_are_crontabs_in_utc_since_their_slots_are_elapsed_time(registry: Registry):
    assert schedule_config(_schedule(registry, registry.every(10).minutes))["timezone"] == "UTC"
    assert schedule_config(_schedule(registry, registry.every().day.at("02:30")))["timezone"] == "Europe/London"


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda r: r.every(7).minutes, {"type": "interval", "value": 7, "unit": "minute"}),
        (lambda r: r.every(90).seconds, {"type": "interval", "value": 2, "unit": "minute"}),
        (lambda r: r.every(5).hours, {"type": "interval", "value": 5, "unit": "hour"}),
        (lambda r: r.every(3).days.at("04:00"), {"type": "interval", "value": 3, "unit": "day"}),
        (lambda r: r.every(2).weeks, {"type": "interval", "value": 2, "unit": "week"}),
    ],
)
def test_intervals_no_crontab_can_say_become_sentry_intervals(registry: Registry, build, expected: dict):
    assert schedule_config(_schedule(registry, build(registry)))["schedule"] == expected


def test_sub_minute_jobs_are_expected_every_minute(registry: Registry):
    config = schedule_config(_schedule(registry, registry.every(20).seconds))
    assert config["schedule"] == {"type": "crontab", "value": "* * * * *"}


def test_cron_jobs_keep_their_expression_and_zone(registry: Registry):
    config = schedule_config(_schedule(registry, cron("0 6 * * mon-fri", tz="America/New_York")))
    assert config == {"schedule": {"type": "crontab", "value": "0 6 * * mon-fri"}, "timezone": "America/New_York"}


def test_margin_runtime_and_failure_threshold_come_from_the_jobs_options(registry: Registry):
    schedule = _schedule(registry, registry.every(10).minutes)
    config = monitor_config(schedule, timeout=45 * 60, margin=90, failures=3)
    assert config["checkin_margin"] == 2  # minutes, rounded up
    assert config["max_runtime"] == 46  # the timeout, and a minute for the host to report the kill
    assert config["failure_issue_threshold"] == 3
    assert monitor_config(schedule, timeout=None)["max_runtime"] == 40320  # no timeout: Sentry's longest


def test_the_hosts_heartbeat_monitor_follows_the_heartbeat_interval():
    assert heartbeat_config(30)["schedule"] == {"type": "interval", "value": 1, "unit": "minute"}
    assert heartbeat_config(300)["schedule"] == {"type": "interval", "value": 5, "unit": "minute"}


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("nightly_export", "nightly_export"),
        ("Exports.Daily-Partition", "exports-daily-partition"),
        ("2024", "job-2024"),
    ],
)
def test_slugs_are_derived_from_job_names(name: str, slug: str):
    assert slug_for(name) == slug


def test_long_names_keep_distinct_slugs_within_sentrys_limit():
    first, second = slug_for("a" * 60 + "_one"), slug_for("a" * 60 + "_two")
    assert first != second and len(first) <= 50 and len(second) <= 50


def test_the_monitor_option_takes_a_slug_or_false(registry: Registry):
    @registry.job(registry.every(10).minutes, monitor="exports-nightly")
    def a() -> None: ...

    @registry.job(registry.every(10).minutes, monitor=False)
    def b() -> None: ...

    assert registry.jobs["a"].monitor == "exports-nightly"
    assert registry.jobs["b"].monitor is None
    assert check_slug(None) is None
    with pytest.raises(ValueError, match="monitor='Not A Slug' must be a Sentry monitor slug"):
        check_slug("Not A Slug")


def test_bad_sentry_options_are_reported_with_the_job(registry: Registry):
    from jobhost.errors import JobDefinitionError

    with pytest.raises(JobDefinitionError) as caught:

        @registry.job(registry.every(10).minutes, monitor="UPPER", checkin_margin="soon", report_each_attempt="yes")
        def c() -> None: ...

    message = str(caught.value)
    assert "monitor='UPPER'" in message
    assert "checkin_margin 'soon' is not a duration" in message
    assert "report_each_attempt must be True or False" in message


def test_two_jobs_on_one_monitor_slug_get_apart_or_are_told(registry: Registry):
    from jobhost.errors import JobDefinitionError

    @registry.job(registry.every(10).minutes, name="Mixed.Case")
    def a() -> None: ...

    @registry.job(registry.every(10).minutes, name="mixed-case")
    def b() -> None: ...

    assert registry.validate() == []  # derived slugs: the second keeps a hash of its name
    assert registry.jobs["Mixed.Case"].monitor == "mixed-case"
    assert registry.jobs["mixed-case"].monitor.startswith("mixed-case-")

    @registry.job(registry.every(10).minutes, name="c", monitor="shared")
    def c() -> None: ...

    @registry.job(registry.every(10).minutes, name="d", monitor="shared")
    def d() -> None: ...

    with pytest.raises(JobDefinitionError, match=r"slug 'shared' is also the job 'c'"):
        registry.validate()
