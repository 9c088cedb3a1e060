"""StoreLink against an injected clock: an outage is said once, and ends with a write, not a read."""

from __future__ import annotations

import logging

import pytest

from jobhost.engine.storelink import StoreLink
from jobhost.errors import StoreFailing


class Disk:
    """A state file whose writes fail while it is full; reads always work."""

    def __init__(self) -> None:
        self.full = False

    def write(self) -> str:
        if self.full:
            raise StoreFailing("the SQLite state file 'state.sqlite3' failed: database or disk is full")
        return "written"

    def read(self) -> str:
        return "read"


def test_an_outage_is_said_once_and_ends_only_when_a_write_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    disk = Disk()
    link = StoreLink(max_backoff=2.0, monotonic=lambda: now[0], probe=disk.write)
    caplog.set_level(logging.INFO, logger="jobhost.host")
    disk.full = True
    assert link.call(disk.write, None) is None
    assert link.failure is not None and "disk is full" in link.failure
    for _ in range(10):  # reads go on working meanwhile: they must not end the outage
        now[0] += 1.0
        assert link.call(disk.read, "held") == "held"
        assert not link.up
    disk.full = False
    now[0] += 2.0
    assert link.call(disk.read, "held") == "read"
    assert link.up and link.failure is None and link.recovered()
    events = [r.event for r in caplog.records if str(getattr(r, "event", "")).startswith("store_")]
    assert events == ["store_failing", "store_recovered"]
