"""End to end, on a booted Debian host deployed by the real play: a deploy of a new release in
the middle of a long run lets it finish under the code it started with (one record, succeeded,
every line in the log, nothing left in `ps`), while the new release runs the other slots."""

from __future__ import annotations

import datetime as dt
import json
import shlex
from collections.abc import Iterator

import pytest

from tests.support.debian_host import DebianHost
from tests.support.deploy_site import Controller, Logstash, deploy_site, log_lines
from tests.support.sentry_servers import wait_until

pytestmark = pytest.mark.timeout(900)

STEADY = """
import os
import subprocess
import time

from jobhost import cron, job


@job(cron("0 0 1 1 *"), catchup="none", timeout="15m")
def steady():
    subprocess.Popen(["sleep", "900"])  # a grandchild, in the run's process group
    print("steady started", flush=True)
    step = 0
    while not os.path.exists("/tmp/steady-may-end"):  # the test says when: after the deploy
        print("steady step", step, flush=True)
        step += 1
        time.sleep(1)
    print("steady done", flush=True)
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DebianHost, Controller, list[Logstash]]]:
    with deploy_site(tmp_path_factory, host_vars="jobhost_stop_grace=10", jobs={"steady": STEADY}) as built:
        yield built


def jobhost(host: DebianHost, *args: str) -> str:
    done = host.run(shlex.join(["jobhost", *args]), check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _records(host: DebianHost) -> list[dict]:
    return [json.loads(line) for line in log_lines(host)]


def _steady(host: DebianHost) -> list[dict]:
    return json.loads(jobhost(host, "history", "steady", "--limit", "10", "--json"))


NAMES = """
import os, pwd
uid = pwd.getpwnam("jobhost").pw_uid
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if os.stat(f"/proc/{pid}").st_uid == uid:
            print(open(f"/proc/{pid}/comm").read().strip())
    except OSError:
        pass
"""


def _names(host: DebianHost) -> list[str]:
    """What the job user's processes are called (`ps -o comm`; the host has no ps)."""
    return host.run(f"python3 -c {shlex.quote(NAMES)}").stdout.split()


def test_a_deploy_in_the_middle_of_a_long_run_lets_it_finish_in_its_release(site) -> None:
    host, controller, _ = site
    running = host.run("readlink /opt/jobhost/current").stdout.strip()
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)).isoformat()
    jobhost(host, "run", "steady", "--at", at)
    run = wait_until(
        lambda: next((r for r in _steady(host) if r["status"] == "running"), None), timeout=60, what="the run"
    )
    wait_until(
        lambda: any(r.get("message") == "steady step 1" for r in _records(host)), timeout=30, what="the run going"
    )
    (controller.dir / "jobs" / "notes.py").write_text("# a change of code: a new release\n")
    revision = controller.commit("a release in the middle of a long run")
    deployed = controller.deploy()
    assert deployed.returncode == 0, deployed.stdout[-4000:]
    assert host.run("readlink /opt/jobhost/current").stdout.strip() == f"/opt/jobhost/releases/{revision}"
    assert host.run("readlink /opt/jobhost/current").stdout.strip() != running
    [going] = [r for r in _steady(host) if r["run_id"] == run["run_id"]]
    assert going["status"] == "running", going  # not interrupted by the deploy
    assert {"sleep", "keep:steady", "job:steady"} <= set(_names(host)), _names(host)  # the run, whole
    restarted = [r for r in _records(host) if r.get("event") == "host_started"][-1]
    host.run("touch /tmp/steady-may-end")
    ended = wait_until(
        lambda: next((r for r in _steady(host) if r["run_id"] == run["run_id"] and r["status"] != "running"), None),
        timeout=60,
        what="the kept run to end",
    )
    assert ended["status"] == "succeeded", ended
    assert [r for r in _steady(host) if r["slot"] == run["slot"]] == [ended]
    lines = [r["message"] for r in _records(host) if r.get("run_id") == run["run_id"] and r.get("stream") == "stdout"]
    steps = [line for line in lines if line.startswith("steady step")]
    assert lines[0] == "steady started" and lines[-1] == "steady done"
    assert steps == [f"steady step {n}" for n in range(len(steps))]  # every line, once, in order
    assert [r["event"] for r in _records(host) if r.get("run_id") == run["run_id"] and r.get("event")].count(
        "run_succeeded"
    ) == 1
    # The new release ran the other job's slots while the kept run went on.
    pings = [
        r
        for r in _records(host)
        if r.get("job") == "ping" and r.get("event") == "run_succeeded" and r["timestamp"] > restarted["timestamp"]
    ]
    assert pings
    wait_until(
        lambda: not {"sleep", "keep:steady", "job:steady"} & set(_names(host)),
        timeout=30,
        what="the run's keeper, job and grandchild gone once it ended",
    )
