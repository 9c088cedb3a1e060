"""Runs asked for by hand through the loop (the HTTP API's POST /run), on a fixed clock: they
are one run each, like `run`, and never change what the schedule's own runs do."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from jobhost.config import HostConfig
from jobhost.context import RunContext
from jobhost.definition.registry import Registry
from jobhost.definition.spec import JobSpec
from jobhost.engine.attempt import Attempt, Parked
from jobhost.engine.host import Host
from jobhost.errors import HostStopping
from jobhost.outcomes import Outcome, RunStatus
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
    return Host(_jobs(), open_store(f"sqlite:///{tmp_path / 's.db'}", tmp_path), HostConfig(), clock=lambda: NIGHT)


@dataclass
class _Going:
    """A run in flight, as far as the loop's bookkeeping looks at it: it ends when told to."""

    spec: JobSpec
    context: RunContext
    ends_with: Outcome = field(default_factory=lambda: Outcome(RunStatus.SUCCEEDED))
    done: bool = False
    prepared: bool = False
    cancelled: bool = False
    handed: bool = False
    needs_polling: bool = False

    def fds(self) -> list[int]:
        return []

    def held_fds(self) -> list[int]:
        return []

    def poll(self, now: float) -> list[int]:
        return []

    def next_deadline(self) -> float | None:
        return None

    def outcome(self) -> Outcome:
        return self.ends_with


def _going(host: Host, attempt: Attempt) -> _Going:
    """Put `attempt` in flight, as if its run had started."""
    run = _Going(host.jobs[attempt.job], attempt.context)
    attempt.run, attempt.started_mono = run, host.monotonic()  # type: ignore[assignment]
    host.runner.active[attempt.run_id] = attempt
    return run


def _ends(host: Host, attempt: Attempt, outcome: Outcome | None = None) -> None:
    """The run of `attempt` ends (with `outcome`), and the loop settles what ended."""
    run = attempt.run if isinstance(attempt.run, _Going) else _going(host, attempt)
    run.ends_with, run.done = outcome or run.ends_with, True
    for ended in host.runner.reap():
        host.on_finished(ended)


def _asked(host: Host, job: str, slot: dt.datetime) -> Attempt:
    """A run asked for by hand, taken by the loop."""
    context = host.request_run(host.jobs[job], slot, "alice")
    [taken] = list(host.requests.take())
    assert taken.context == context
    host.backlog.park(taken, Parked.READY)
    return taken


def test_a_run_by_hand_is_queued_for_the_loop_and_never_claimed(host: Host) -> None:
    attempt = _asked(host, "build", BUILD)
    assert host.backlog.ready() == [attempt] and attempt.manual
    assert host.counts() == (0, 1, 0)
    assert not host.leases.held  # nothing claimed: the schedule's own attempt of the slot is untouched


def test_a_run_asked_for_while_stopping_is_refused(host: Host) -> None:
    host.stop.signal = 15
    with pytest.raises(HostStopping):
        host.request_run(host.jobs["build"], BUILD, "alice")


def test_a_failed_run_by_hand_does_not_block_what_waits_on_the_slot(host: Host) -> None:
    host.admission.dispatch(host.jobs["export"], NIGHT)  # build has not succeeded for the night: export waits
    [waiting] = host.backlog.waiting_on_parents()
    manual = _asked(host, "build", BUILD)
    host.backlog.unpark(manual)
    _ends(host, manual, Outcome(RunStatus.FAILED, "ValueError: by hand"))
    assert host.backlog.waiting_on_parents() == [waiting]  # the schedule's own attempts may still succeed
    assert not host.retries.pop_due(NIGHT + dt.timedelta(days=1))  # and a run by hand is not retried

    # The schedule's attempt that fails for good does block it.
    scheduled = Attempt.new(host.jobs["build"], BUILD, 2)
    assert host.leases.claim(scheduled)
    _ends(host, scheduled, Outcome(RunStatus.FAILED, "ValueError: at night"))
    assert host.backlog.waiting_on_parents() == []
    [blocked] = [r for r in host.store.runs("export") if r.run_id == waiting.run_id]
    assert blocked.reason.startswith("blocked: build failed")


def test_a_queued_slot_waits_for_every_run_of_its_job_to_end(host: Host) -> None:
    spec = host.jobs["sync"]
    scheduled = Attempt.new(spec, NIGHT)
    _going(host, scheduled)
    manual = _asked(host, "sync", NIGHT)
    host.backlog.unpark(manual)
    _going(host, manual)
    host.admission.dispatch(spec, NIGHT + dt.timedelta(minutes=10))  # due while a run of sync goes on: queued
    [queued] = host.backlog.behind("sync")

    _ends(host, manual)  # the run by hand ends first: the scheduled one still goes on
    assert not host.backlog.ready() and host.backlog.behind("sync") == [queued]
    _ends(host, scheduled)
    assert host.backlog.ready() == [queued]


def test_a_backlog_of_an_overlap_allow_job_is_not_held_behind_its_runs(host: Host) -> None:
    spec = host.jobs["fetch"]
    first, second = Attempt.new(spec, NIGHT), Attempt.new(spec, NIGHT + dt.timedelta(minutes=10))
    for attempt in (first, second):
        _going(host, attempt)
    backlog = Attempt.new(spec, NIGHT - dt.timedelta(minutes=10))
    host.backlog.park(backlog, Parked.BEHIND)  # a catch-up run waiting its turn
    _ends(host, first)  # the other run goes on, which "allow" does not wait for
    assert host.backlog.ready() == [backlog]


def test_a_parent_failed_by_hand_while_its_own_attempt_goes_on_blocks_nothing(host: Host) -> None:
    host.admission.dispatch(host.jobs["export"], NIGHT)
    [waiting] = host.backlog.waiting_on_parents()
    going = RunRecord("going", "build", BUILD, 1, RunStatus.RUNNING, started=BUILD, host="other")
    host.store.add_run(going)
    host.store.add_run(RunRecord("by-hand", "build", BUILD, 1, RunStatus.FAILED, "by hand", BUILD, BUILD, 5))
    assert host.dependencies.look_again() == []
    assert host.backlog.waiting_on_parents() == [waiting]
    host.store.finish_run("going", RunStatus.FAILED, "for good", NIGHT, 10)
    assert host.dependencies.look_again() == []
    assert host.backlog.waiting_on_parents() == []
