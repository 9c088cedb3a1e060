"""`after=`: which parent slot a child's slot waits for (pure), and a child slot whose parent already failed."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from jobhost.definition.registry import Registry
from jobhost.engine.dependencies import parent_slots
from jobhost.engine.host import Host
from jobhost.outcomes import RunStatus
from jobhost.store import RunRecord, open_store

LONDON = ZoneInfo("Europe/London")


def _registry() -> Registry:
    registry = Registry(default_zone=LONDON)

    @registry.job(registry.every().day.at("02:30"))
    def build(): ...

    @registry.job(registry.every().day.at("03:00"), after="build")
    def export(): ...

    @registry.job(registry.every(1).hours, after=["build"])
    def hourly(): ...

    registry.validate()
    return registry


def test_a_child_waits_for_the_newest_parent_slot_not_later_than_its_own() -> None:
    jobs = _registry().jobs
    night = dt.datetime(2026, 11, 23, 3, 0, tzinfo=LONDON)
    assert parent_slots(jobs["export"], night, jobs) == [("build", dt.datetime(2026, 11, 23, 2, 30, tzinfo=LONDON))]
    afternoon = dt.datetime(2026, 11, 23, 15, 0, tzinfo=LONDON)
    assert parent_slots(jobs["hourly"], afternoon, jobs) == [("build", dt.datetime(2026, 11, 23, 2, 30, tzinfo=LONDON))]
    early = dt.datetime(2026, 11, 23, 2, 0, tzinfo=LONDON)  # before today's build: yesterday's counts
    assert parent_slots(jobs["hourly"], early, jobs) == [("build", dt.datetime(2026, 11, 22, 2, 30, tzinfo=LONDON))]


def test_a_child_slot_whose_parent_slot_already_ended_without_success_is_blocked_at_once(tmp_path) -> None:
    registry = _registry()
    store = open_store(f"sqlite:///{tmp_path / 'state.sqlite3'}", tmp_path)
    night = dt.datetime(2026, 11, 23, 2, 30, tzinfo=LONDON)
    store.add_run(RunRecord("b1", "build", night, 1, RunStatus.MISSED, "superseded", ended=night))
    host = Host(registry.jobs, store)
    host.admission.dispatch(registry.jobs["export"], night.replace(hour=3, minute=0))
    [record] = store.runs("export")
    assert record.status == RunStatus.WAITING and record.ended is not None
    assert record.reason == f"blocked: build missed for slot {night.isoformat()}"
    assert not host.backlog.waiting_on_parents() and not host.backlog.ready()
    store.close()
