"""Hand-over on two hosts sharing PostgreSQL: the host that restarts lets its run finish under
its keeper, which keeps the claim's lease renewed, so the other host neither takes the run over
nor starts a second one beside it (overlap="skip" across hosts)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
from pathlib import Path

from tests.conftest import Deployment, HostProcess
from tests.support.sentry_servers import wait_until

JOBS = """
import time
from jobhost import job, every

@job(every(2).seconds, overlap="skip")
def long_job():
    for step in range(12):
        print("step", step, flush=True)
        time.sleep(1)

@job(every(1).seconds)
def tick():
    pass
"""


def _records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _left_running(deployment: Deployment, url: str, run: dict, *, timeout: float, what: str) -> dict:
    """The run's record once it is no longer `running` (waited for, bounded)."""

    def ended() -> dict | None:
        history = deployment.history("long_job", limit=1000, JOBS_STATE_URL=url)
        return next((r for r in history if r["run_id"] == run["run_id"] and r["status"] != "running"), None)

    return wait_until(ended, timeout=timeout, what=what)


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def test_a_restart_on_one_of_two_hosts_lets_its_run_finish_and_no_host_runs_it_twice(
    deployment: Deployment, postgres, host
) -> None:
    deployment.write("long", JOBS)
    url = postgres.new_database()  # type: ignore[attr-defined]
    logs = deployment.tmp / "logs"
    logs.mkdir()

    def start(name: str) -> HostProcess:
        return host(
            JOBS_STATE_URL=url,
            JOBS_HOST_NAME=name,
            JOBS_LEASE="6s",  # shorter than the run: the keeper must renew it, or the other host takes it
            JOBS_STOP_GRACE="5s",
            JOBS_LOG_FILE=str(logs / f"{name}.log"),
        )

    fleet = {name: start(name) for name in ("h1", "h2")}
    run = wait_until(
        lambda: next((r for r in deployment.history("long_job", JOBS_STATE_URL=url) if r["status"] == "running"), None),
        timeout=30,
        what="a long run on either host",
    )
    holder = run["host"]
    log = logs / f"{holder}.log"
    wait_until(lambda: any(r.get("message") == "step 1" for r in _records(log)), timeout=20, what="the run going")
    assert fleet[holder].stop() == 0  # at once: the run is its keeper's
    fleet[holder] = start(holder)
    ended = _left_running(deployment, url, run, timeout=60, what="the kept run to end")
    for process in fleet.values():
        assert process.stop() == 0
    assert (ended["status"], ended["host"], ended["attempt"]) == ("succeeded", holder, 1), ended
    lines = [r["message"] for r in _records(log) if r.get("run_id") == run["run_id"] and r.get("stream") == "stdout"]
    assert lines == [f"step {n}" for n in range(12)]
    history = deployment.history("long_job", limit=1000, JOBS_STATE_URL=url)
    beside = [
        r
        for r in history
        if r["run_id"] != run["run_id"]
        and r["started"]
        and _at(r["started"]) < _at(ended["ended"])
        and (r["ended"] is None or _at(r["ended"]) > _at(run["started"]))
    ]
    assert beside == [], beside  # not taken over, not run twice, on neither host
    assert [r for r in history if r["slot"] == run["slot"]] == [ended]


def test_a_kept_run_whose_lease_another_host_took_is_stopped_and_not_recorded_twice(
    deployment: Deployment, postgres, host
) -> None:
    deployment.write("long", JOBS.replace("range(12)", "range(600)"))
    url = postgres.new_database()  # type: ignore[attr-defined]
    logs = deployment.tmp / "logs"
    logs.mkdir()

    def start(name: str) -> HostProcess:
        env = {"JOBS_LEASE": "3s", "JOBS_STOP_GRACE": "5s", "JOBS_LOG_FILE": str(logs / f"{name}.log")}
        return host(JOBS_STATE_URL=url, JOBS_HOST_NAME=name, **env)

    fleet = {name: start(name) for name in ("h1", "h2")}
    run = wait_until(
        lambda: next((r for r in deployment.history("long_job", JOBS_STATE_URL=url) if r["status"] == "running"), None),
        timeout=30,
        what="a long run on either host",
    )
    holder = run["host"]
    wait_until(
        lambda: any(r.get("message") == "step 1" for r in _records(logs / f"{holder}.log")), timeout=20, what="going"
    )
    assert fleet[holder].stop() == 0
    fleet[holder] = start(holder)
    wait_until(
        lambda: any(r.get("event") == "run_kept" for r in _records(logs / f"{holder}.log")), timeout=20, what="kept"
    )
    os.kill(run["pid"], signal.SIGSTOP)  # the keeper stalls past its lease: the other host takes the run over
    try:
        _left_running(deployment, url, run, timeout=30, what="the run taken over")
    finally:
        os.kill(run["pid"], signal.SIGCONT)
    wait_until(lambda: not _alive(run["pid"]), timeout=30, what="the keeper to stop its run once it saw the lease gone")
    for process in fleet.values():
        assert process.stop() == 0
    [taken] = [
        r for r in deployment.history("long_job", limit=1000, JOBS_STATE_URL=url) if r["run_id"] == run["run_id"]
    ]
    assert taken["status"] == "abandoned", taken  # as the host that took it over recorded it, not overwritten
    kept_log = _records(logs / f"{holder}.log")
    assert not [r for r in kept_log if r.get("run_id") == run["run_id"] and r.get("event") == "run_succeeded"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
