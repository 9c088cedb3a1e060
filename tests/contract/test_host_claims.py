"""The loop's side of claims, on SQLite and PostgreSQL: two Host objects share one store, as two
hosts share one database. Nothing runs here; the hosts dispatch, take over and renew."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

from jobhost.config import HostConfig
from jobhost.definition.registry import Registry
from jobhost.engine.host import Host
from jobhost.outcomes import RunStatus
from jobhost.store import RunRecord, open_store

LONDON = ZoneInfo("Europe/London")
NIGHT = dt.datetime(2026, 11, 23, 3, 0, tzinfo=LONDON)


def _jobs() -> dict:
    registry = Registry(default_zone=LONDON)

    @registry.job(registry.every().day.at("02:30"))
    def build(): ...

    @registry.job(registry.every().day.at("03:00"), after="build")
    def export(): ...

    registry.validate()
    return registry.jobs


def _host(url: str, tmp_path: Path, name: str) -> Host:
    return Host(_jobs(), open_store(url, tmp_path), HostConfig(hostname=name, lease=30), clock=lambda: NIGHT)


def _expire(host: Host) -> None:
    """As if `host` had died a while ago: its leases have run out."""
    host.store.renew([attempt.token for attempt in host.leases.held.values() if attempt.token is not None], -1)


def test_a_slot_is_dispatched_by_one_host_only(store_url: str, tmp_path: Path) -> None:
    first, second = _host(store_url, tmp_path, "a"), _host(store_url, tmp_path, "b")
    slot = NIGHT.replace(hour=2, minute=30)
    first.admission.dispatch(first.jobs["build"], slot)
    second.admission.dispatch(second.jobs["build"], slot)
    assert [a.slot for a in first.backlog.ready()] == [slot] and not second.backlog.ready()
    assert second.store.runs() == []  # the loser recorded nothing


def test_a_waiting_child_taken_over_waits_and_runs_on_the_taker(store_url: str, tmp_path: Path) -> None:
    dead, taker = _host(store_url, tmp_path, "a"), _host(store_url, tmp_path, "b")
    dead.admission.dispatch(dead.jobs["export"], NIGHT)  # build has not succeeded: export waits, on host a
    [waiting] = dead.backlog.waiting_on_parents()
    _expire(dead)
    taker.chores.tick()
    [moved] = taker.backlog.waiting_on_parents()  # the slot waits on, on host b, under a run id of its own
    assert (moved.slot, moved.number) == (NIGHT, 1) and moved.run_id != waiting.run_id
    build = NIGHT.replace(hour=2, minute=30)
    taker.store.add_run(RunRecord("b1", "build", build, 1, RunStatus.SUCCEEDED, ended=build, host="b"))
    for released in taker.dependencies.look_again():  # the parent succeeded (on any host): released
        taker.admission.admit(released)
    [ready] = taker.backlog.ready()
    assert (ready.slot, ready.number) == (NIGHT, 1) and ready.run_id in taker.leases.held  # still claimed
    records = {r.run_id: r for r in taker.store.runs("export")}
    assert records[waiting.run_id].ended is not None and "b took the slot over" in records[waiting.run_id].reason


def test_a_host_that_lost_its_claims_drops_what_it_had_queued(store_url: str, tmp_path: Path) -> None:
    cut_off, taker = _host(store_url, tmp_path, "a"), _host(store_url, tmp_path, "b")
    slot = NIGHT.replace(hour=2, minute=30)
    cut_off.admission.dispatch(cut_off.jobs["build"], slot)
    _expire(cut_off)
    taker.chores.tick()
    assert [a.slot for a in taker.backlog.ready()] == [slot]  # b starts it
    cut_off.chores.tick()  # a is back: its claim is gone
    assert not cut_off.backlog.ready() and not cut_off.leases.held


def test_a_host_whose_clock_is_off_says_so(store_url: str, tmp_path: Path, caplog) -> None:
    store = open_store(store_url, tmp_path)
    ahead = Host(_jobs(), store, clock=lambda: dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10))
    ahead.leases.check_clock()
    [warning] = [r for r in caplog.records if getattr(r, "event", None) == "clock_skew"]
    assert "10.0 s ahead of the state store's" in warning.getMessage() and 9000 < warning.skew_ms < 11000
    caplog.clear()
    Host(_jobs(), store).leases.check_clock()
    assert not [r for r in caplog.records if getattr(r, "event", None) == "clock_skew"]
    store.close()


def test_a_pause_shorter_than_a_heartbeat_is_still_caught_up(store_url: str, tmp_path: Path) -> None:
    host = _host(store_url, tmp_path, "a")
    build = NIGHT.replace(hour=2, minute=30)
    yesterday = build - dt.timedelta(days=1)
    host.store.add_run(RunRecord("y", "build", yesterday, 1, RunStatus.SUCCEEDED, ended=yesterday, host="a"))
    host.catch_up.resumed()  # the heartbeat before the pause
    host.store.set_paused("build", True)
    host.admission.dispatch(host.jobs["build"], build)  # due while paused: skipped
    host.store.set_paused("build", False)  # resumed before the next heartbeat
    host.catch_up.resumed()
    [caught] = host.backlog.ready()
    assert (caught.job, caught.slot, caught.number) == ("build", build, 2)  # the paused slot, run now


def test_a_freeze_skips_every_job_and_a_thaw_catches_up_all_but_those_paused_on_their_own(
    store_url: str, tmp_path: Path
) -> None:
    from jobhost.store.model import EVERY_JOB

    host = _host(store_url, tmp_path, "a")
    build, yesterday = NIGHT.replace(hour=2, minute=30), NIGHT - dt.timedelta(days=1)
    for job, slot in (("build", build - dt.timedelta(days=1)), ("export", yesterday)):
        host.store.add_run(RunRecord(f"y-{job}", job, slot, 1, RunStatus.SUCCEEDED, ended=slot, host="a"))
    host.catch_up.resumed()  # the heartbeat before the freeze
    host.store.set_paused(EVERY_JOB, True)
    host.store.set_paused("export", True)  # and on its own, for something else
    host.admission.dispatch(host.jobs["build"], build)
    host.admission.dispatch(host.jobs["export"], NIGHT)
    assert not host.backlog.ready()
    assert [r.status for r in host.store.runs()[:2]] == [RunStatus.SKIPPED, RunStatus.SKIPPED]
    assert all(r.paused and r.reason == "paused" for r in host.store.runs()[:2])
    host.store.set_paused(EVERY_JOB, False)
    host.catch_up.resumed()
    [caught] = host.backlog.ready()  # build only: export is still paused on its own
    assert (caught.job, caught.slot, caught.number) == ("build", build, 2)
    assert len(host.store.runs("export")) == 2  # yesterday's and the skip: nothing recorded again


def test_a_pause_whose_end_has_come_skips_nothing_though_no_heartbeat_has_resumed_it(
    store_url: str, tmp_path: Path
) -> None:
    from jobhost.store.model import EVERY_JOB, Pause

    host = _host(store_url, tmp_path, "a")
    host.store.set_paused("build", True, Pause("window", "alice", NIGHT - dt.timedelta(hours=1), NIGHT))
    host.store.set_paused(EVERY_JOB, True, Pause("deploy", "bob", NIGHT - dt.timedelta(hours=1), NIGHT))
    host.admission.dispatch(host.jobs["build"], NIGHT)  # due at the very end of both
    [ready] = host.backlog.ready()
    assert (ready.job, ready.slot) == ("build", NIGHT)
    host.store.set_paused("export", True, Pause("still", "carol", NIGHT, NIGHT + dt.timedelta(minutes=1)))
    host.admission.paused.forget()
    host.admission.dispatch(host.jobs["export"], NIGHT)
    assert [r.reason for r in host.store.runs("export")] == ["paused"]  # a pause not yet ended still holds
