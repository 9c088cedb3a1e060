"""Starting an attempt when the machine says no: a run whose process cannot be made is settled
crashed with nothing left going; a run that cannot be watched stops the loop, since a run must
never go on unwatched (the next start recovers it)."""

from __future__ import annotations

import datetime as dt
import errno
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from jobhost.config import HostConfig
from jobhost.definition.registry import Registry
from jobhost.engine.host import Host
from jobhost.outcomes import RunStatus
from jobhost.store import open_store

LONDON = ZoneInfo("Europe/London")
NIGHT = dt.datetime(2026, 11, 23, 3, 0, tzinfo=LONDON)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    registry = Registry(default_zone=LONDON)

    @registry.job(registry.every(10).minutes, retries=1)
    def export(): ...

    registry.validate()
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", tmp_path)
    return Host(registry.jobs, store, HostConfig(), clock=lambda: NIGHT)


def test_a_run_whose_process_cannot_be_made_is_settled_crashed_and_nothing_is_left_going(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_more_processes() -> int:
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    monkeypatch.setattr(os, "fork", no_more_processes)
    host.admission.dispatch(host.jobs["export"], NIGHT)
    host.start_ready()
    [record] = host.store.runs("export")
    assert record.status == RunStatus.CRASHED and record.reason.startswith("the run could not be started: [Errno 11]")
    assert not host.runner.active and not host.leases.held
    assert [(r.slot, r.attempt) for r in host.retries.queue] == [(NIGHT, 2)]  # a crash, retried as any


def test_a_run_that_cannot_be_watched_stops_the_loop_and_is_not_settled(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    def epoll_full(run_id: str, fds: list[int]) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(host.runner.watcher, "watch", epoll_full)
    host.admission.dispatch(host.jobs["export"], NIGHT)
    with pytest.raises(OSError, match="No space left"):
        host.start_ready()
    [record] = host.store.runs("export")
    assert record.status == RunStatus.RUNNING  # left for the next start to recover, never settled twice
    assert not list(host.retries.queue)
    for attempt in list(host.runner.active.values()):  # the run was going: stop it
        assert attempt.run is not None and attempt.run.pid is not None
        os.killpg(attempt.run.pid, 9)
        os.waitpid(attempt.run.pid, 0)
