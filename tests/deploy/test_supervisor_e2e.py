"""The host under a real supervisord, with the program config the repository ships."""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from configuration.settings import read_setting
from configuration.supervisor import SUPERVISORD, render, stop_wait_secs
from tests.conftest import ROOT, Deployment, require

BIN = Path(sys.executable).parent

STUBBORN = """
import signal, subprocess, time
from jobhost import job, every

@job(every(1).seconds, timeout="10m")
def long_job():
    if {ignore_term}:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.Popen(["sleep", "300"])  # a grandchild, in the run's process group
    time.sleep(30)
"""


class Supervisor:
    def __init__(self, deployment: Deployment, **env: str):
        require("supervisord", (BIN / "supervisord").exists(), "pip install -r requirements-dev.txt")
        self.deployment = deployment
        self.dir = deployment.tmp / "supervisor"
        self.dir.mkdir()
        self.log = self.dir / "jobs.log"
        values = {
            "program": "jobs",
            "python": sys.executable,
            "directory": str(ROOT),
            "user": getpass.getuser(),
            "output_file": str(self.log),
            "env_file": "",
            "output_max_bytes": "50MB",
            "output_backups": "10",
            "stop_wait_secs": str(stop_wait_secs(read_setting("JOBS_STOP_GRACE", env))),
        }
        (self.dir / "jobs.conf").write_text(render(values))
        self.conf = self.dir / "supervisord.conf"
        self.conf.write_text(SUPERVISORD.format(here=self.dir))
        subprocess.run([BIN / "supervisord", "-c", self.conf], env={**deployment.env, **env}, check=True, timeout=30)

    def ctl(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BIN / "supervisorctl", "-c", self.conf, *args], capture_output=True, text=True, timeout=timeout
        )

    def records(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]  # every line is JSON

    def wait_for(self, predicate, what: str, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            records = self.records()
            if predicate(records):
                return records
            if time.monotonic() > deadline:
                pytest.fail(f"waited {timeout}s for {what}; log tail: {records[-10:]}\n{self.ctl('status').stdout}")
            time.sleep(0.2)

    def host_pid(self) -> int:
        return int(self.ctl("pid", "jobs").stdout.strip())

    def shutdown(self) -> None:
        """Stop supervisord and wait (bounded) until it is gone: `shutdown` only asks."""
        pidfile = self.dir / "supervisord.pid"
        pid = int(pidfile.read_text()) if pidfile.exists() else None
        self.ctl("shutdown", timeout=120)
        deadline = time.monotonic() + 90
        # supervisord daemonizes into a session and group of its own (pgid == pid).
        while pid is not None and _group(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid is not None and _group(pid):
            os.killpg(pid, signal.SIGKILL)


def _group(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _started(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("event") == "run_started" and r.get("job") == "long_job"]


@pytest.fixture
def supervisor(deployment: Deployment) -> Iterator:
    started: list[Supervisor] = []

    def start(**env: str) -> Supervisor:
        started.append(Supervisor(deployment, **env))
        return started[-1]

    yield start
    for sup in started:
        sup.shutdown()


def test_restart_mid_run_loses_nothing_and_leaves_no_process(deployment: Deployment, supervisor) -> None:
    deployment.write("stubborn", STUBBORN.format(ignore_term=False))
    sup = supervisor(JOBS_STOP_GRACE="2s")
    sup.wait_for(lambda rs: _started(rs), "a run to start")
    old_host = sup.host_pid()
    [run] = [r for r in deployment.history("long_job") if r["status"] == "running"]
    restarted = sup.ctl("restart", "jobs")
    assert "started" in restarted.stdout, restarted.stdout + restarted.stderr
    assert sup.host_pid() != old_host
    [after] = [r for r in deployment.history("long_job") if r["run_id"] == run["run_id"]]
    assert after["status"] == "interrupted" and "SIGTERM" in after["reason"]
    assert _group(old_host) == [] and _group(run["pid"]) == [], "a process of the old host or its run survived"
    assert not [r for r in deployment.history("long_job") if r["status"] == "running" and r["pid"] == run["pid"]]
    sup.wait_for(lambda rs: len([r for r in rs if r.get("event") == "host_started"]) == 2, "the new host")
    # The new host caught the interrupted slot up (catchup="latest": superseded by the latest slot).
    caught = [r for r in deployment.history("long_job") if r["slot"] == run["slot"] and r["status"] == "missed"]
    assert caught and "superseded" in caught[0]["reason"]


def test_stop_returns_in_time_and_kills_a_job_that_ignores_sigterm(deployment: Deployment, supervisor) -> None:
    deployment.write("stubborn", STUBBORN.format(ignore_term=True))
    sup = supervisor(JOBS_STOP_GRACE="1s")
    sup.wait_for(lambda rs: _started(rs), "a run to start")
    [run] = [r for r in deployment.history("long_job") if r["status"] == "running"]
    began = time.monotonic()
    stopped = sup.ctl("stop", "jobs")
    took = time.monotonic() - began
    assert "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert took < 60, f"stop took {took:.1f}s, past stopwaitsecs"
    [after] = [r for r in deployment.history("long_job") if r["run_id"] == run["run_id"]]
    assert after["status"] == "interrupted"
    assert _group(run["pid"]) == []
    assert sup.records()[-1]["event"] == "host_stopped"


def test_a_killed_host_is_restarted_and_recovers_its_run(deployment: Deployment, supervisor) -> None:
    deployment.write("stubborn", STUBBORN.format(ignore_term=False))
    sup = supervisor(JOBS_STOP_GRACE="2s")
    sup.wait_for(lambda rs: _started(rs), "a run to start")
    old_host = sup.host_pid()
    [run] = [r for r in deployment.history("long_job") if r["status"] == "running"]
    os.kill(old_host, signal.SIGKILL)
    sup.wait_for(
        lambda rs: any(r.get("event") == "run_abandoned" and r.get("run_id") == run["run_id"] for r in rs),
        "the new host to find the abandoned run",
    )
    assert sup.host_pid() != old_host
    [after] = [r for r in deployment.history("long_job") if r["run_id"] == run["run_id"]]
    assert after["status"] == "abandoned"
    deadline = time.monotonic() + 10
    while _group(run["pid"]) and time.monotonic() < deadline:  # the run's grandchild is killed with its group
        time.sleep(0.1)
    assert _group(run["pid"]) == []
    sup.records()  # the log file is still JSON lines throughout
