"""Runs asked for by hand through the loop (the HTTP API's POST /run), on a fixed clock: they
are one run each, like `run`, and never change what the schedule's own runs do."""

from __future__ import annotations

import datetime as dt
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from jobhost.context import RunContext
from jobhost.definition.registry import Registry
from jobhost.definition.spec import JobSpec
from jobhost.host import Host, HostConfig, HostStopping, _Active
from jobhost.outcomes import Outcome, RunStatus
from jobhost.retries import RetryQueue
from jobhost.store import RunRecord, open_store

LONDON = ZoneInfo("Europe/London")
NIGHT = dt.datetime(2026, 11, 23, 3, 0, tzinfo=LONDON)
BUILD = NIGHT.replace(hour=2, minute=30)


def _jobs() -> dict:
    registry = Registry(default_zone=LONDON)

    @registry.job(registry.every().day.at("02:30"), retries=1)
    def build(): ...

    @registry.job(registry.every().day.at("03:00"), after="build")
    def export(): ...

    @registry.job(registry.every(10).minutes, overlap="queue")
    def sync(): ...

    @registry.job(registry.every(10).minutes, overlap="allow")
    def fetch(): ...

    registry.validate()
    return registry.jobs


@pytest.fixture
def host(tmp_path: Path) -> Host:
    made = Host(_jobs(), open_store(f"sqlite:///{tmp_path / 's.db'}", tmp_path), HostConfig(), clock=lambda: NIGHT)
    made._retries = RetryQueue()
    return made


@dataclass
class _Going:
    """A run in flight, as far as the loop's bookkeeping looks at it."""

    spec: JobSpec
    context: RunContext
    ends_with: Outcome = field(default_factory=lambda: Outcome(RunStatus.SUCCEEDED))
    done: bool = False

    def fds(self) -> list[int]:
        return []

    def outcome(self) -> Outcome:
        return self.ends_with


def _asked(host: Host, job: str, slot: dt.datetime) -> RunContext:
    context = host.request_run(host.jobs[job], slot)
    [taken] = list(host._requested)
    host._requested.clear()
    host._take_request(taken)
    return context


def test_a_run_by_hand_is_queued_for_the_loop_and_never_claimed(host: Host) -> None:
    context = _asked(host, "build", BUILD)
    assert list(host.pending) == [context] and context.run_id in host._manual
    assert host.load() == (0, 1, 0)
    assert not host._tokens  # nothing claimed: the schedule's own attempt of the slot is untouched


def test_a_run_asked_for_while_stopping_is_refused(host: Host) -> None:
    host._stop_signal = 15
    with pytest.raises(HostStopping):
        host.request_run(host.jobs["build"], BUILD)


def test_a_failed_run_by_hand_does_not_block_what_waits_on_the_slot(host: Host) -> None:
    host._dispatch(host.jobs["export"], NIGHT)  # build has not succeeded for the night: export waits
    [waiting] = host.waiting
    manual = _asked(host, "build", BUILD)
    host.pending.clear()
    host._end(manual, host.monotonic(), Outcome(RunStatus.FAILED, "ValueError: by hand"))
    assert host.waiting == [waiting]  # the schedule's own attempts may still succeed
    assert not host._retries.pop_due(NIGHT + dt.timedelta(days=1))  # and a run by hand is not retried

    # The schedule's attempt that fails for good does block it.
    scheduled = host._context(host.jobs["build"], BUILD, attempt=2)
    assert host._claim(scheduled)
    host._end(scheduled, host.monotonic(), Outcome(RunStatus.FAILED, "ValueError: at night"))
    assert host.waiting == []
    [blocked] = [r for r in host.store.runs("export") if r.run_id == waiting.run_id]
    assert blocked.reason.startswith("blocked: build failed")


def test_a_queued_slot_waits_for_every_run_of_its_job_to_end(host: Host) -> None:
    spec = host.jobs["sync"]
    scheduled = host._context(spec, NIGHT)
    host.active[scheduled.run_id] = _Active(_Going(spec, scheduled), host.monotonic())  # type: ignore[arg-type]
    manual = _asked(host, "sync", NIGHT)
    host.pending.clear()
    host.active[manual.run_id] = _Active(_Going(spec, manual), host.monotonic())  # type: ignore[arg-type]
    host._dispatch(spec, NIGHT + dt.timedelta(minutes=10))  # due while a run of sync goes on: queued
    [queued] = host.queued_overlap["sync"]

    host._finish(manual.run_id)  # the run by hand ends first: the scheduled one still goes on
    assert not host.pending and list(host.queued_overlap["sync"]) == [queued]
    host._finish(scheduled.run_id)
    assert list(host.pending) == [queued]


def test_a_backlog_of_an_overlap_allow_job_is_not_held_behind_its_runs(host: Host) -> None:
    spec = host.jobs["fetch"]
    first, second = host._context(spec, NIGHT), host._context(spec, NIGHT + dt.timedelta(minutes=10))
    for context in (first, second):
        host.active[context.run_id] = _Active(_Going(spec, context), host.monotonic())  # type: ignore[arg-type]
    backlog = host._context(spec, NIGHT - dt.timedelta(minutes=10))
    host.queued_overlap["fetch"] = deque([backlog])  # a catch-up run waiting its turn
    host._finish(first.run_id)  # the other run goes on, which "allow" does not wait for
    assert list(host.pending) == [backlog]


def test_a_parent_failed_by_hand_while_its_own_attempt_goes_on_blocks_nothing(host: Host) -> None:
    host._dispatch(host.jobs["export"], NIGHT)
    [waiting] = host.waiting
    going = RunRecord("going", "build", BUILD, 1, RunStatus.RUNNING, started=BUILD, host="other")
    host.store.add_run(going)
    host.store.add_run(RunRecord("by-hand", "build", BUILD, 1, RunStatus.FAILED, "by hand", BUILD, BUILD, 5))
    host._look_at_waiting()
    assert host.waiting == [waiting]
    host.store.finish_run("going", RunStatus.FAILED, "for good", NIGHT, 10)
    host._look_at_waiting()
    assert host.waiting == []
