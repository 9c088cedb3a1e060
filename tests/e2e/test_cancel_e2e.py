"""End to end: a person cancels a real run, of the loop or of `jobs.py run`, from the command line;
the run's process group goes (a helper it started too), the record says who, nothing is retried
and the job that comes after it is blocked."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import Deployment, events
from tests.support.sentry_servers import wait_until

LONG = """
import subprocess, time
from jobhost import job, every

@job(every(3).seconds, retries=2, retry_delay="1s", overlap="skip", catchup="none")
def long_export():
    helper = subprocess.Popen(["sleep", "300"])
    with open({pidfile!r}, "a") as pids:
        pids.write(f"{{helper.pid}}\\n")
    time.sleep(300)

@job(every(3).seconds, after="long_export", catchup="none")
def report():
    pass
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")  # a zombie is dead for our purpose
    return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"


def _write(deployment: Deployment) -> Path:
    pidfile = deployment.tmp / "helpers.pids"
    deployment.write("long", LONG.format(pidfile=str(pidfile)))
    return pidfile


def _helper(pidfile: Path) -> int:
    text = wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "the job's helper process")
    return int(text.splitlines()[0])


def test_a_run_of_the_loop_cancelled_by_name_stops_its_group_is_not_retried_and_blocks_its_child(
    deployment: Deployment, host
) -> None:
    pidfile = _write(deployment)
    process = host(JOBS_HEARTBEAT_INTERVAL="1m")  # the loop's own look is a minute away: the nudge must do it
    started = process.wait_for(lambda rs: events(rs, "long_export", "run_started"), what="the long run to start")
    run_id = events(started, "long_export", "run_started")[0]["run_id"]
    helper = _helper(pidfile)

    cancelled = deployment.cli("cancel", "long_export", "--reason", "wrong input file")
    user = getpass.getuser()
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"run {run_id} of long_export: cancelled (cancelled by {user}: wrong input file)" in cancelled.stdout
    wait_until(lambda: not _alive(helper), 10, "the job's helper to be gone with its group")

    records = process.wait_for(
        lambda rs: any("long_export cancelled" in r.get("reason", "") for r in events(rs, "report", "run_waiting")),
        what="the child of the cancelled slot to be blocked",
    )
    [line] = [r for r in events(records, "long_export", "run_cancelled") if r["run_id"] == run_id]
    assert "time.sleep(300)" in line["exc_info"] and "Terminated" in line["exc_info"]  # raised where it was
    assert not [r for r in records if r.get("run_id") == run_id and r.get("event") == "run_retrying"]
    assert process.stop() == 0

    [record] = [r for r in deployment.history("long_export") if r["run_id"] == run_id]
    assert (record["status"], record["reason"]) == ("cancelled", f"cancelled by {user}: wrong input file")
    slot_runs = [r for r in deployment.history("long_export") if r["slot"] == record["slot"]]
    assert [r["attempt"] for r in slot_runs] == [1]  # not retried
    [action] = [a for a in json.loads(deployment.cli("audit", "--json").stdout) if a["action"] == "cancel"]
    assert (action["actor"], action["target"], action["reason"]) == (user, run_id, "wrong input file")
    assert action["detail"]["job"] == "long_export"

    again = deployment.cli("cancel", run_id)
    assert again.returncode == 2 and f"run {run_id} of long_export ended at " in again.stderr
    assert "as cancelled; nothing changed" in again.stderr
    unknown = deployment.cli("cancel", "no-such-run")
    assert unknown.returncode == 2 and "no run no-such-run in history" in unknown.stderr
    idle = deployment.cli("cancel", "report")
    assert idle.returncode == 2 and "no run of report is going" in idle.stderr
    assert len([a for a in json.loads(deployment.cli("audit", "--json").stdout) if a["action"] == "cancel"]) == 1


def test_a_run_in_the_foreground_is_cancelled_from_another_terminal(deployment: Deployment) -> None:
    pidfile = _write(deployment)
    foreground = subprocess.Popen(
        [sys.executable, str(deployment.root / "jobs.py"), "run", "long_export"],
        env=deployment.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        helper = _helper(pidfile)
        cancelled = deployment.cli("cancel", "long_export")
        assert cancelled.returncode == 0, (cancelled.stdout, cancelled.stderr)
        assert foreground.wait(30) == 1  # the run did not succeed
    finally:
        if foreground.poll() is None:
            foreground.kill()
        foreground.communicate()
    wait_until(lambda: not _alive(helper), 10, "the job's helper to be gone with its group")
    [record] = deployment.history("long_export")
    assert record["status"] == "cancelled" and record["requested_by"] == getpass.getuser()


def test_a_cancel_its_host_died_before_acting_on_is_done_by_the_next_start(deployment: Deployment, host) -> None:
    _write(deployment)
    process = host()
    started = process.wait_for(lambda rs: events(rs, "long_export", "run_started"), what="the long run to start")
    run_id = events(started, "long_export", "run_started")[0]["run_id"]
    process.proc.kill()  # SIGKILL: the loop cannot act on anything; its run dies with it
    process.proc.wait(10)
    asked = deployment.cli("cancel", run_id, "--wait", "0")
    assert asked.returncode == 0 and "cancel asked" in asked.stdout
    again = host()
    again.wait_for(lambda rs: any(r.get("event") == "host_started" for r in rs), what="the next start")
    assert again.stop() == 0
    [record] = [r for r in deployment.history("long_export") if r["run_id"] == run_id]
    assert record["status"] == "cancelled" and record["reason"].startswith(f"cancelled by {getpass.getuser()} (")
    assert not [r for r in deployment.history("long_export") if r["slot"] == record["slot"] and r["attempt"] > 1]


CHAIN = """
import os, time
from jobhost import job, every

@job(every(5).seconds, catchup="none")
def parent():
    if "UPSTREAM_FIXED" in os.environ:  # the person's run by hand, once the upstream is fixed
        return
    time.sleep(30)

@job(every(5).seconds, after="parent", catchup="none")
def child():
    pass
"""


def test_a_waiting_child_is_cancelled_by_name_and_a_blocked_one_stays_cancelled_after_a_fix(
    deployment: Deployment, host
) -> None:
    deployment.write("chain", CHAIN)
    # A child of a skipped parent slot is blocked at the next tick: a heartbeat of 2 s makes it soon.
    process = host(JOBS_STOP_GRACE="1s", JOBS_HEARTBEAT_INTERVAL="2s")
    records = process.wait_for(lambda rs: events(rs, "child", "run_waiting"), what="the child to wait")
    waiting = events(records, "child", "run_waiting")[0]
    assert deployment.cli("cancel", "child", "--reason", "not today").returncode == 0  # found by its name
    [record] = [r for r in deployment.history("child") if r["run_id"] == waiting["run_id"]]
    assert (record["status"], record["reason"]) == ("cancelled", f"cancelled by {getpass.getuser()}: not today")
    # The next slots of the parent are skipped while it runs: their children are blocked, and stay
    # so until someone fixes the parent's slot. One cancelled is settled: the fix runs nothing of it.
    blocked = process.wait_for(
        lambda rs: any(r.get("blocked") for r in events(rs, "child", "run_waiting")), what="a blocked child"
    )
    line = next(r for r in events(blocked, "child", "run_waiting") if r.get("blocked"))
    assert deployment.cli("cancel", line["run_id"]).returncode == 0
    [settled] = [r for r in deployment.history("child") if r["run_id"] == line["run_id"]]
    assert settled["status"] == "cancelled" and "(it was blocked: parent" in settled["reason"]
    fixed = deployment.cli("run", "parent", "--slot", line["slot"], UPSTREAM_FIXED="1")
    assert fixed.returncode == 0
    later = process.wait_for(  # the nudged loop has looked for children to release by then
        lambda rs: any(r["slot"] > line["slot"] for r in events(rs, "child", "run_waiting")), what="a later slot"
    )
    assert not [r for r in later if r.get("event") == "run_unblocked"]
    assert [r["status"] for r in deployment.history("child") if r["slot"] == line["slot"]] == ["cancelled"]
    assert process.stop() == 0
