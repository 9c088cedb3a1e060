"""Hand-over under a real supervisord: with a log file, `restart` lets a run in flight finish
under its keeper while the new host runs the other slots; `stop` still stops everything."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Deployment
from tests.deploy.test_supervisor_e2e import Supervisor, _group
from tests.support.sentry_servers import EnvelopeSink, wait_until

LONG = """
import subprocess, sys, time
from jobhost import job, every

@job(every(2).seconds, overlap="skip", timeout="{timeout}")
def long_job():
    subprocess.Popen(["sleep", "300"])  # a grandchild, in the run's process group
    for step in range({steps}):
        print("step", step, flush=True)
        time.sleep(1)
    sys.stdout.write("no newline at the end")

@job(every(1).seconds)
def tick():
    pass
"""


class LoggedSupervisor(Supervisor):
    """supervisord with the host writing JOBS_LOG_FILE, as the role sets it up."""

    def __init__(self, deployment: Deployment, **env: str):
        self.file = deployment.tmp / "logs" / "host.log"
        self.file.parent.mkdir(exist_ok=True)
        super().__init__(deployment, JOBS_LOG_FILE=str(self.file), **env)

    def records(self) -> list[dict]:
        """Every line of the log and its backups, oldest first; read again if a writer rotated the
        files meanwhile (a rename under the reader would skip or repeat a file)."""
        while True:
            before = self._files()
            try:
                lines = [line for file, _ in before for line in file.read_text().splitlines()]
            except FileNotFoundError:
                continue
            if self._files() == before:
                return [json.loads(line) for line in lines]

    def _files(self) -> list[tuple[Path, int]]:
        """The files oldest first, each with its inode (a rotation renames them)."""
        files = sorted(self.file.parent.glob("host.log*"), key=lambda p: p.suffix != ".log" and -int(p.suffix[1:]))
        found = []
        for file in files:
            try:
                found.append((file, file.stat().st_ino))
            except FileNotFoundError:
                continue
        return found


@pytest.fixture
def supervisor(deployment: Deployment) -> Iterator:
    started: list[Supervisor] = []

    def start(**env: str) -> LoggedSupervisor:
        started.append(LoggedSupervisor(deployment, **env))
        return started[-1]  # type: ignore[return-value]

    yield start
    for sup in started:
        sup.shutdown()


def _of(records: list[dict], run_id: str, event: str | None = None) -> list[dict]:
    return [r for r in records if r.get("run_id") == run_id and (event is None or r.get("event") == event)]


def _record(deployment: Deployment, run: dict) -> dict:
    """The run's one record in the history (asserted one), as it is now."""
    [record] = [r for r in deployment.history(run["job"], limit=1000) if r["run_id"] == run["run_id"]]
    return record


def _first_long_run(sup: LoggedSupervisor, deployment: Deployment) -> dict:
    sup.wait_for(lambda rs: any(r.get("message") == "step 1" for r in rs), "a long run to be going")
    [run] = [r for r in deployment.history("long_job") if r["status"] == "running"]
    return run


def _gone(pgid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while _group(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _group(pgid)


def test_a_restart_lets_the_run_in_flight_finish_once_while_the_new_host_runs_the_rest(
    deployment: Deployment, supervisor
) -> None:
    deployment.write("long", LONG.format(steps=12, timeout="10m"))
    sup = supervisor(JOBS_STOP_GRACE="5s")
    run = _first_long_run(sup, deployment)
    old_host = sup.host_pid()
    restarted = sup.ctl("restart", "jobs")
    assert "started" in restarted.stdout, restarted.stdout + restarted.stderr
    new_host = sup.host_pid()
    assert new_host != old_host
    sup.wait_for(lambda rs: _of(rs, run["run_id"], "run_succeeded"), "the kept run to end", timeout=60)
    after = _record(deployment, run)
    assert after["status"] == "succeeded", after
    assert _gone(run["pid"]), "the keeper or the run's grandchild outlived the run"

    records = sup.records()
    lines = [r["message"] for r in _of(records, run["run_id"]) if r.get("stream") == "stdout"]
    assert lines == [f"step {n}" for n in range(12)] + ["no newline at the end"]  # each once, in order
    assert len(_of(records, run["run_id"], "run_succeeded")) == 1
    assert len(_of(records, run["run_id"], "run_handed_over")) == 1
    # The new host ran the other job meanwhile, and started no second long run beside the kept one.
    ended = dt_of(after["ended"])
    restarted_at = next(
        dt_of(r["timestamp"]) for r in records if r.get("event") == "host_started" and r is not records[0]
    )
    ticks = [
        r for r in deployment.history("tick", limit=1000) if restarted_at < dt_of(r["started"] or r["ended"]) < ended
    ]
    assert ticks and all(r["status"] == "succeeded" for r in ticks)
    overlapping = [
        r
        for r in deployment.history("long_job", limit=1000)
        if r["run_id"] != run["run_id"]
        and r["started"]
        and dt_of(r["started"]) < ended
        and dt_of(r["ended"] or r["started"]) > dt_of(run["started"])
    ]
    assert overlapping == [], overlapping


def test_a_stop_still_stops_the_run_within_the_grace_and_leaves_nothing(deployment: Deployment, supervisor) -> None:
    deployment.write("long", LONG.format(steps=120, timeout="10m"))
    sup = supervisor(JOBS_STOP_GRACE="3s")
    run = _first_long_run(sup, deployment)
    stopped = sup.ctl("stop", "jobs")
    assert "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    sup.wait_for(lambda rs: _of(rs, run["run_id"], "run_interrupted"), "the kept run to be stopped", timeout=30)
    after = _record(deployment, run)
    assert after["status"] == "interrupted" and "none started after it" in after["reason"], after
    assert _gone(run["pid"])


def test_a_kept_run_past_its_timeout_is_killed_and_recorded_timed_out(deployment: Deployment, supervisor) -> None:
    deployment.write("long", LONG.format(steps=120, timeout="6s"))
    sup = supervisor(JOBS_STOP_GRACE="3s")
    run = _first_long_run(sup, deployment)
    sup.ctl("restart", "jobs")
    sup.wait_for(lambda rs: _of(rs, run["run_id"], "run_timed_out"), "the kept run to time out", timeout=30)
    after = _record(deployment, run)
    assert after["status"] == "timed_out", after
    assert _gone(run["pid"])


def dt_of(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_two_restarts_in_a_row_still_let_the_run_finish_once(deployment: Deployment, supervisor) -> None:
    deployment.write("long", LONG.format(steps=10, timeout="10m"))
    sup = supervisor(JOBS_STOP_GRACE="5s")
    run = _first_long_run(sup, deployment)
    for _ in range(2):
        restarted = sup.ctl("restart", "jobs")
        assert "started" in restarted.stdout, restarted.stdout + restarted.stderr
    sup.wait_for(lambda rs: _of(rs, run["run_id"], "run_succeeded"), "the kept run to end", timeout=60)
    after = _record(deployment, run)
    assert after["status"] == "succeeded", after
    lines = [r["message"] for r in _of(sup.records(), run["run_id"]) if r.get("stream") == "stdout"]
    assert lines == [f"step {n}" for n in range(10)] + ["no newline at the end"]
    assert _gone(run["pid"])


def test_a_host_killed_before_it_could_hand_over_takes_its_run_with_it(deployment: Deployment, supervisor) -> None:
    deployment.write("long", LONG.format(steps=120, timeout="10m"))
    sup = supervisor(JOBS_STOP_GRACE="5s")
    run = _first_long_run(sup, deployment)
    os.kill(sup.host_pid(), signal.SIGKILL)
    assert _gone(run["pid"]), "a run outlived a host killed without a hand-over"
    sup.wait_for(lambda rs: _of(rs, run["run_id"], "run_abandoned"), "the next host to record the run abandoned")
    after = _record(deployment, run)
    assert after["status"] == "abandoned", after


def test_a_keeper_killed_after_the_hand_over_is_found_by_the_next_host(deployment: Deployment, supervisor) -> None:
    deployment.write("long", LONG.format(steps=120, timeout="10m"))
    sup = supervisor(JOBS_STOP_GRACE="5s", JOBS_LEASE="6s")  # the loop looks at kept runs every lease / 3
    run = _first_long_run(sup, deployment)
    sup.ctl("restart", "jobs")
    sup.wait_for(lambda rs: _of(rs, run["run_id"], "run_kept"), "the keeper to carry the run")
    os.kill(run["pid"], signal.SIGKILL)  # the recorded pid is the keeper's
    sup.wait_for(lambda rs: _of(rs, run["run_id"], "run_abandoned"), "the host to record the run abandoned")
    after = _record(deployment, run)
    assert after["status"] == "abandoned" and "keeper" in after["reason"], after
    assert _gone(run["pid"]), "the job or its grandchild outlived its keeper"
    # The job runs again: its next slot is no longer behind a kept run.
    sup.wait_for(
        lambda rs: any(
            r.get("event") == "run_started" and r.get("job") == "long_job" and r["run_id"] != run["run_id"] for r in rs
        ),
        "the next run of the job",
    )


RETRIED = """
import time
from pathlib import Path
from jobhost import job, every

@job(every(2).seconds, overlap="skip", catchup="none", retries=1, retry_delay="1s")
def export(slot):
    marker = Path(__file__).with_name("failed-once")
    print("export of", slot.isoformat(), flush=True)
    if not marker.exists():  # the first run fails, after the restart that hands it over
        marker.write_text(slot.isoformat())
        time.sleep(4)
        raise RuntimeError("the export failed after the restart")

@job(every(2).seconds, after=["export"], catchup="all")  # waiting at the restart: the next host holds it again
def report(slot):
    print("report of", slot.isoformat(), flush=True)
"""


def test_a_kept_run_that_fails_is_retried_and_its_child_runs_on_the_new_host(
    deployment: Deployment, supervisor
) -> None:
    deployment.write("retried", RETRIED)
    sup = supervisor(JOBS_STOP_GRACE="5s")
    sup.wait_for(lambda rs: (deployment.jobs_dir / "failed-once").exists(), "the first export to begin")
    slot = (deployment.jobs_dir / "failed-once").read_text()
    sup.ctl("restart", "jobs")
    records = sup.wait_for(
        lambda rs: any(r.get("message") == f"report of {slot}" for r in rs), "the child of the slot", timeout=60
    )
    attempts = [r for r in deployment.history("export", limit=1000) if r["slot"] == slot]
    assert sorted((r["attempt"], r["status"]) for r in attempts) == [(1, "failed"), (2, "succeeded")], attempts
    [kept] = [r for r in attempts if r["attempt"] == 1]
    ends = [r["event"] for r in _of(records, kept["run_id"]) if r.get("event") not in ("run_started", None)]
    assert ends == ["run_handed_over", "run_kept", "run_retrying"], ends  # its failure said once, by the keeper
    [child] = [r for r in deployment.history("report", limit=1000) if r["slot"] == slot and r["status"] != "waiting"]
    assert child["status"] == "succeeded", child


FAILS = """
import time
from jobhost import job, every

@job(every(2).seconds, overlap="skip")
def doomed():
    print("step 1", flush=True)
    time.sleep(4)
    raise RuntimeError("the doomed job failed under its keeper")
"""


def test_a_kept_run_that_fails_is_one_sentry_event_and_one_closing_check_in(deployment: Deployment, supervisor) -> None:
    sink = EnvelopeSink()
    try:
        deployment.write("doomed", FAILS)
        sup = supervisor(JOBS_STOP_GRACE="5s", SENTRY_DSN=sink.dsn)
        sup.wait_for(lambda rs: any(r.get("message") == "step 1" for r in rs), "a run to be going")
        [run] = [r for r in deployment.history("doomed") if r["status"] == "running"]
        sup.ctl("restart", "jobs")
        sup.wait_for(lambda rs: _of(rs, run["run_id"], "run_failed"), "the kept run to fail", timeout=30)
        events = wait_until(
            lambda: [e for e in sink.events() if e.get("tags", {}).get("run_id") == run["run_id"]] or None,
            timeout=30,
            what="the kept run's Sentry event",
        )
        sup.ctl("stop", "jobs")
        events = [e for e in sink.events() if e.get("tags", {}).get("run_id") == run["run_id"]]
        assert len(events) == 1, events
        assert "the doomed job failed under its keeper" in json.dumps(events[0]["exception"])
        check_ins = [
            c["status"] for c in sink.check_ins() if c.get("check_in_id", "").replace("-", "") == run["run_id"]
        ]
        assert check_ins == ["in_progress", "error"], check_ins
    finally:
        sink.close()


def test_a_kept_run_is_cancelled_by_a_person_as_a_run_of_the_host_is(deployment: Deployment, supervisor) -> None:
    deployment.write("long", LONG.format(steps=120, timeout="10m"))
    sup = supervisor(JOBS_STOP_GRACE="5s")
    run = _first_long_run(sup, deployment)
    sup.ctl("restart", "jobs")
    sup.wait_for(lambda rs: _of(rs, run["run_id"], "run_kept"), "the keeper to carry the run")
    cancelled = deployment.cli("cancel", run["run_id"], "--reason", "wrong input file")
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    after = _record(deployment, run)
    assert after["status"] == "cancelled" and "wrong input file" in after["reason"], after
    assert _gone(run["pid"])


SLOW_THREAD = (
    LONG
    + """
@job(every(1).seconds, isolation="thread", overlap="skip")
def in_the_host():
    time.sleep(10)  # a thread run: the old host waits the grace for it before it exits
"""
)


def test_the_grace_for_a_new_host_starts_when_the_old_one_has_exited(deployment: Deployment, supervisor) -> None:
    deployment.write("long", SLOW_THREAD.format(steps=12, timeout="10m"))
    sup = supervisor(JOBS_STOP_GRACE="3s")  # shorter than the old host's wait plus the new one's start
    run = _first_long_run(sup, deployment)
    sup.wait_for(
        lambda rs: any(r.get("job") == "in_the_host" and r.get("event") == "run_started" for r in rs), "a thread run"
    )
    sup.ctl("restart", "jobs")
    sup.wait_for(lambda rs: _of(rs, run["run_id"], "run_succeeded"), "the kept run to end", timeout=60)
    after = _record(deployment, run)
    assert after["status"] == "succeeded", after


def test_a_stop_after_a_restart_still_stops_the_kept_run(deployment: Deployment, supervisor) -> None:
    deployment.write("long", LONG.format(steps=120, timeout="10m"))
    sup = supervisor(JOBS_STOP_GRACE="3s")
    run = _first_long_run(sup, deployment)
    sup.ctl("restart", "jobs")
    sup.wait_for(lambda rs: len([r for r in rs if r.get("event") == "host_started"]) == 2, "the new host")
    stopped = sup.ctl("stop", "jobs")
    assert "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    sup.wait_for(lambda rs: _of(rs, run["run_id"], "run_interrupted"), "the kept run to be stopped", timeout=30)
    after = _record(deployment, run)
    assert after["status"] == "interrupted" and "none started after it" in after["reason"], after
    assert _gone(run["pid"])


FORKING_THREAD = (
    LONG
    + """
import os

@job(every(1).seconds, isolation="thread", overlap="skip")
def forks():
    if os.fork() == 0:  # a fork of the host itself, which outlives it (a pool of a thread job's)
        time.sleep(60)
        os._exit(0)
"""
)


def test_a_fork_of_a_thread_job_does_not_keep_a_killed_hosts_runs_alive(deployment: Deployment, supervisor) -> None:
    deployment.write("long", FORKING_THREAD.format(steps=120, timeout="10m"))
    sup = supervisor(JOBS_STOP_GRACE="5s")
    run = _first_long_run(sup, deployment)
    sup.wait_for(lambda rs: any(r.get("job") == "forks" and r.get("event") == "run_succeeded" for r in rs), "a fork")
    os.kill(sup.host_pid(), signal.SIGKILL)
    assert _gone(run["pid"]), "a run outlived its killed host: a fork of the host held its keeper's orders pipe"


FLOOD = """
import time
from pathlib import Path
from jobhost import job, every

@job(every(2).seconds, overlap="skip")
def flood():
    once = Path(__file__).with_name("flooded")
    if once.exists():  # one flood: the files are read while nothing rotates them
        return
    once.write_text("")
    for n in range(20000):
        print("line", n, "x" * 60, flush=n % 50 == 0)
        if n % 2000 == 0:
            time.sleep(0.5)
"""


def test_a_chatty_kept_run_under_a_quiet_host_keeps_the_log_at_its_size(deployment: Deployment, supervisor) -> None:
    deployment.write("flood", FLOOD)
    sup = supervisor(JOBS_STOP_GRACE="5s", JOBS_LOG_MAX_BYTES="64KB", JOBS_LOG_BACKUPS="1000")
    sup.wait_for(lambda rs: any(r.get("message", "").startswith("line 2000 ") for r in rs), "the flood going")
    [run] = [r for r in deployment.history("flood") if r["status"] == "running"]
    sup.ctl("restart", "jobs")
    sup.wait_for(lambda rs: _of(rs, run["run_id"], "run_succeeded"), "the kept run to end", timeout=90)
    sup.ctl("stop", "jobs")  # nothing writes, or rotates, the files while they are read
    lines = [r["message"] for r in _of(sup.records(), run["run_id"]) if r.get("stream") == "stdout"]
    assert [int(line.split()[1]) for line in lines] == list(range(20000))  # once each, in order
    sizes = [path.stat().st_size for path in sup.file.parent.glob("host.log*")]
    assert len(sizes) > 20 and max(sizes) <= 64 * 1024, sorted(sizes)[-5:]
