"""The fields a job logs with `extra=` reach the lines a person reads (the text format, the run
page's kept lines) and Sentry's breadcrumbs, beside the message; the engine's own fields stay out."""

from __future__ import annotations

import datetime as dt
import logging

from configuration.log_setup import TextFormatter
from jobhost.context import RunContext
from jobhost.observe.runlines import RunLines
from jobhost.observe.sentry.breadcrumbs import Breadcrumbs


def _record(name: str, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": name, "levelno": logging.INFO, "levelname": "INFO", "msg": "disk checked"})
    for key, value in {
        "job": "system_health",
        "run_id": "0123456789abcdef",
        "slot": "s",
        "attempt": 1,
        **extra,
    }.items():
        setattr(record, key, value)
    return record


def test_the_text_format_shows_a_jobs_fields_after_its_message() -> None:
    text = TextFormatter().format(_record("jobs.system_health", load_1m=0.42, free_percent=63))
    assert text.endswith("[system_health 01234567] disk checked  load_1m=0.42 free_percent=63")


def test_the_engines_own_lines_show_no_fields() -> None:
    text = TextFormatter().format(_record("jobhost.run", event="run_succeeded", lateness_ms=0.2))
    assert text.endswith("[system_health 01234567] disk checked")


def test_the_kept_lines_of_a_run_carry_its_fields() -> None:
    lines = RunLines()
    lines.emit(_record("jobs.system_health", load_1m=0.42))
    kept = lines.lines("0123456789abcdef")
    assert kept is not None
    [line] = kept[0]
    assert line["fields"] == {"load_1m": "0.42"}


def test_a_failure_events_breadcrumbs_carry_the_fields_too() -> None:
    slot = dt.datetime(2026, 11, 23, 3, 0, tzinfo=dt.UTC)
    crumbs = Breadcrumbs()
    crumbs.emit(_record("jobs.system_health", slot=slot.isoformat(), free_percent=7))
    [crumb] = crumbs.take(RunContext("system_health", "0123456789abcdef", slot, 1))
    assert crumb["data"]["free_percent"] == "7" and crumb["message"] == "disk checked"
