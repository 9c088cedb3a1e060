"""`plan` on both backends: what it says a deploy does, against a store with history and the jobs
of the release running now; its catch-up is the loop's own decision at a start (start_plan)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from jobhost.definition.registry import Registry
from jobhost.operations import function_of
from jobhost.outcomes import RunStatus
from jobhost.planning import plan
from jobhost.store import RunRecord, StateStore

LONDON = ZoneInfo("Europe/London")
NOW = dt.datetime(2026, 10, 24, 12, 0, tzinfo=LONDON)  # the day before the clocks go back


def _new_jobs() -> dict:
    registry = Registry(default_zone=LONDON)

    @registry.job(registry.every().day.at("01:30"))
    def nightly(): ...

    @registry.job(registry.every(1).hours, catchup="all")
    def hourly(): ...

    def renamed(): ...

    registry.job(registry.every().day.at("05:00"), name="new_name")(renamed)

    @registry.job(registry.every().monday.at("09:00"))
    def fresh(): ...

    registry.validate()
    return registry.jobs


def _old(jobs: dict, name: str) -> str:
    """The job's function as the running release names it: the same module within another package."""
    return "old_jobs_package." + function_of(jobs[name]).partition(".")[2]


def _running(jobs: dict) -> list[dict]:
    """What the running release's `list --json` says: nightly at 00:30, the old name, and a job since removed."""
    return [
        {"name": "nightly", "schedule": "every day at 00:30 (Europe/London)", "timezone": "Europe/London",
         "next_slots": ["2026-10-25T00:30:00+01:00"], "monitor": "nightly", "file": "/old/jobs/a.py",
         "function": _old(jobs, "nightly")},
        {"name": "hourly", "schedule": "every hour", "timezone": "Europe/London", "next_slots": [(NOW + dt.timedelta(hours=h)).isoformat() for h in (1, 2, 3)],
         "monitor": "hourly", "file": "/old/jobs/a.py", "function": _old(jobs, "hourly")},
        {"name": "old_name", "schedule": "every day at 05:00 (Europe/London)", "timezone": "Europe/London",
         "monitor": "old_name", "file": "/old/jobs/a.py", "function": _old(jobs, "new_name")},  # the same function
        {"name": "gone", "schedule": "every 10 minutes", "timezone": "Europe/London", "monitor": "gone",
         "file": "/old/jobs/b.py", "function": "jobs.b.gone"},
    ]  # fmt: skip


def _settled(store: StateStore, job: str, slot: dt.datetime) -> None:
    store.add_run(RunRecord(f"{job}-{slot.isoformat()}", job, slot, 1, RunStatus.SUCCEEDED, ended=slot, host="h"))


def test_a_plan_says_what_is_added_removed_renamed_and_rescheduled_across_dst(store: StateStore) -> None:
    jobs = _new_jobs()
    _settled(store, "hourly", NOW - dt.timedelta(hours=3))
    _settled(store, "nightly", NOW.replace(hour=1, minute=30))
    plans = {p.name: p for p in plan(jobs, store, _running(jobs), NOW)}
    assert {name: p.change for name, p in plans.items()} == {
        "nightly": "rescheduled",
        "hourly": "unchanged",
        "new_name": "renamed",
        "fresh": "added",
        "gone": "removed",
    }
    assert plans["new_name"].was == "old_name"
    # Across the change back to GMT: 01:30 is the first of the two 01:30s (BST), then GMT.
    assert plans["nightly"].next_slots == [
        "2026-10-25T01:30:00+01:00",
        "2026-10-26T01:30:00+00:00",
        "2026-10-27T01:30:00+00:00",
    ]
    assert plans["nightly"].old_next_slots == ["2026-10-25T00:30:00+01:00"]
    # catchup="all": the three hours since its last run, each; what the loop's start runs.
    assert plans["hourly"].runs == [(NOW - dt.timedelta(hours=h)).isoformat() for h in (2, 1, 0)]
    assert plans["nightly"].runs == [] and plans["fresh"].runs == []
    assert plans["gone"].monitor == "left behind" and plans["fresh"].monitor == "created"
    assert "'old_name', its old one, is left behind" in (plans["new_name"].monitor or "")


def test_without_the_running_release_the_history_says_which_jobs_there_were(store: StateStore) -> None:
    jobs = _new_jobs()
    _settled(store, "gone", NOW - dt.timedelta(days=1))
    _settled(store, "hourly", NOW - dt.timedelta(hours=1))
    plans = {p.name: p.change for p in plan(jobs, store, None, NOW)}
    assert plans == {
        "nightly": "added",
        "hourly": "unchanged",
        "new_name": "added",
        "fresh": "added",
        "gone": "removed",
    }


def test_catch_up_held_at_a_deploy_is_given_up_by_the_next_start_and_the_plan_says_so(store: StateStore) -> None:
    from jobhost.planning import hold

    jobs = _new_jobs()
    _settled(store, "hourly", NOW - dt.timedelta(hours=3))
    [held] = hold(store, plan(jobs, store, _running(jobs), NOW), "alice", NOW)
    assert held.name == "hourly" and len(held.runs) == 3
    after = {p.name: p for p in plan(jobs, store, _running(jobs), NOW + dt.timedelta(minutes=30))}["hourly"]
    assert (
        after.runs == []
        and [reason for _, reason in after.missed]
        == ["held at deploy by alice (2026-10-24T11:00:00+00:00): not run by catch-up"] * 3
    )
    assert [(a.action, a.target, a.actor) for a in store.actions()] == [("hold", "hourly", "alice")]
    store.drop_catchup_holds(["hourly"])
    assert store.catchup_holds() == {}


def test_a_paused_job_dead_runs_and_a_function_under_an_old_name_are_what_the_start_will_meet(
    store: StateStore,
) -> None:
    from jobhost.planning import PAUSED
    from jobhost.store.model import Pause

    jobs = _new_jobs()
    running = _running(jobs)
    running[0] = {**running[0], "function": "old_jobs_package.other.nightly"}  # "nightly" was another function
    _settled(store, "hourly", NOW - dt.timedelta(hours=2))
    store.set_paused("hourly", True, Pause("migration", "bob", NOW))
    killed = NOW - dt.timedelta(hours=4)  # a run recorded running whose process is gone: caught up after the start
    plans = {p.name: p for p in plan(jobs, store, running, NOW, dead={"hourly": [killed]})}
    assert plans["nightly"].change == "replaced" and plans["nightly"].rescheduled
    hourly = plans["hourly"]
    assert hourly.runs == [] and [slot for slot, why in hourly.missed if why == PAUSED] == [
        killed.isoformat(),
        *((NOW - dt.timedelta(hours=h)).isoformat() for h in (1, 0)),
    ]


def test_runs_going_now_are_said_to_finish_under_their_release_and_are_not_caught_up(store: StateStore) -> None:
    from jobhost.planning import describe

    jobs = _new_jobs()
    going = NOW - dt.timedelta(minutes=20)  # a run whose keeper lives: the restart lets it finish
    _settled(store, "hourly", NOW - dt.timedelta(hours=1))
    store.add_run(RunRecord("kept", "hourly", going, 1, RunStatus.RUNNING, started=going, host="h", pid=1))
    plans = {p.name: p for p in plan(jobs, store, _running(jobs), NOW, going={"hourly": [going], "gone": [going]})}
    assert plans["hourly"].in_flight == [going.isoformat()]
    assert going.isoformat() not in plans["hourly"].runs
    assert plans["gone"].change == "removed" and plans["gone"].in_flight == [going.isoformat()]
    said = "\n".join(describe(list(plans.values()), known=True))
    assert f"1 run(s) going now (slot {going.isoformat()}) finish under the release they started in" in said
    assert plans["hourly"].as_json()["in_flight"] == [going.isoformat()]
