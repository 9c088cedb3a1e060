"""End to end: `plan --against` the jobs running now says what the next start will do, and the next
start then does exactly that."""

from __future__ import annotations

import datetime as dt
import json
import textwrap

from tests.conftest import Deployment, events

OLD = """
from jobhost import job, every

@job(every(1).hours)
def hourly():
    pass

@job(every().day.at("03:00"))
def old_name():
    pass
"""

NEW = """
from jobhost import job, every

@job(every(1).hours, catchup="all")
def hourly():
    pass

@job(every().day.at("03:00"), name="new_name")
def old_name():
    pass
"""


def test_the_plan_says_what_the_next_start_catches_up_and_it_does(deployment: Deployment, host) -> None:
    old = deployment.tmp / "old_jobs"
    old.mkdir()
    (old / "__init__.py").write_text("")
    (old / "work.py").write_text(textwrap.dedent(OLD))
    three_hours_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    ran = deployment.cli("run", "hourly", "--slot", three_hours_ago.isoformat(), JOBS_DIR=str(old))
    assert ran.returncode == 0, ran.stderr
    deployment.write("work", NEW)

    said = deployment.cli("plan", "--against", str(old), "--json")
    assert said.returncode == 0, said.stderr
    plans = {p["name"]: p for p in json.loads(said.stdout)}
    assert (plans["new_name"]["change"], plans["new_name"]["was"]) == ("renamed", "old_name")
    runs = plans["hourly"]["catch_up"]["runs"]
    assert len(runs) == 3  # catchup="all" now: each hour since, not the latest alone
    human = deployment.cli("plan", "--against", str(old)).stdout
    assert "~ new_name: renamed from old_name" in human and "catch-up runs 3 slot(s)" in human

    process = host()
    records = process.wait_for(
        lambda rs: len(events(rs, "hourly", "run_succeeded")) >= 3, what="the start's catch-up to run"
    )
    assert process.stop() == 0
    started = sorted(dt.datetime.fromisoformat(r["slot"]) for r in events(records, "hourly", "run_started"))
    # The same slots (an hour that began between the plan and the start would add one after them).
    assert started[: len(runs)] == [dt.datetime.fromisoformat(s) for s in runs]


def test_catch_up_held_at_a_deploy_is_recorded_missed_by_the_next_start_not_run(deployment: Deployment, host) -> None:
    deployment.write("work", NEW)
    three_hours_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    assert deployment.cli("run", "hourly", "--slot", three_hours_ago.isoformat()).returncode == 0
    held = deployment.cli("plan", "--hold-catchup", "--job", "hourly", "--json")
    assert held.returncode == 0 and "held: the next start gives up the 3 catch-up run(s) of hourly" in held.stderr
    [after] = json.loads(held.stdout)
    assert after["catch_up"]["runs"] == [] and len(after["catch_up"]["missed"]) == 3
    process = host()
    records = process.wait_for(lambda rs: len(events(rs, "hourly", "run_missed")) >= 3, what="the held slots")
    assert process.stop() == 0
    assert not [r for r in events(records, "hourly", "run_started") if r.get("catch_up")]
    assert all("held at deploy by" in r["reason"] for r in events(records, "hourly", "run_missed"))
    assert json.loads(deployment.cli("plan", "--job", "hourly", "--json").stdout)[0]["catch_up"]["missed"] == []
