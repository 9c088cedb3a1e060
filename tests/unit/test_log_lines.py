"""The lifecycle log line of each event, as a person at a terminal reads its message."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from jobhost.context import RunContext
from jobhost.observe.events import RunEvent
from jobhost.observe.logs import log_event
from jobhost.outcomes import RunStatus

SLOT = dt.datetime(2026, 11, 23, 3, 0, tzinfo=dt.UTC)
CONTEXT = RunContext("export", "r1", SLOT, 1)


def _message(caplog: pytest.LogCaptureFixture, event: RunEvent) -> str:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="jobhost.run"):
        log_event(event)
    [record] = caplog.records
    return record.getMessage()


@pytest.mark.parametrize("status", [RunStatus.MISSED, RunStatus.SKIPPED, RunStatus.WAITING])
def test_a_slot_that_did_not_run_is_named_in_the_message(caplog: pytest.LogCaptureFixture, status: RunStatus) -> None:
    message = _message(caplog, RunEvent(status, CONTEXT, "the host was down"))
    assert message == f"{status.event.replace('run_', 'run ')} for slot 2026-11-23T03:00:00+00:00: the host was down"


def test_a_run_that_ran_is_said_with_its_duration_not_its_slot(caplog: pytest.LogCaptureFixture) -> None:
    assert _message(caplog, RunEvent(RunStatus.SUCCEEDED, CONTEXT, duration_ms=1500)) == "run succeeded (1.5s)"
    assert _message(caplog, RunEvent(RunStatus.RUNNING, CONTEXT)) == "run started"
