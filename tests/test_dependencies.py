"""`after=`: which parent slot a child's slot waits for (pure), and the behaviour end to end."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from jobhost.definition.registry import Registry
from jobhost.engine.dependencies import parent_slots
from jobhost.engine.host import Host
from jobhost.outcomes import RunStatus
from jobhost.store import RunRecord, open_store
from tests.conftest import Deployment, events

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


def test_a_child_waits_is_blocked_by_a_failing_parent_and_runs_once_it_succeeds(deployment: Deployment, host) -> None:
    flag = deployment.tmp / "parent-may-succeed"
    deployment.write(
        "chain",
        f"""
        from pathlib import Path
        from jobhost import job, every

        @job(every(3).seconds)
        def parent():
            if not Path({str(flag)!r}).exists():
                raise RuntimeError("upstream not ready")

        @job(every(3).seconds, after="parent")
        def child():
            pass
        """,
    )
    process = host()
    records = process.wait_for(
        lambda rs: any(r.get("blocked") for r in events(rs, "child", "run_waiting")), what="a blocked child"
    )
    assert not events(records, "child", "run_started")
    flag.write_text("")
    records = process.wait_for(lambda rs: events(rs, "child", "run_succeeded"), what="the child to run")
    assert process.stop() == 0
    [ran] = events(records, "child", "run_succeeded")[:1]
    parent_ok = [r for r in deployment.history("parent") if r["status"] == "succeeded" and r["slot"] == ran["slot"]]
    assert parent_ok, "the child ran for a slot whose parent had not succeeded"
    blocked = [r for r in deployment.history("child") if r["reason"].startswith("blocked: parent failed")]
    assert blocked and all("upstream not ready" in r["reason"] for r in blocked)


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
