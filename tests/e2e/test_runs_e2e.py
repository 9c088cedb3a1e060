"""End to end: real `python jobs.py` processes running jobs that misbehave in every way."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from jobhost.outcomes import RunStatus
from jobhost.store import RunRecord, open_store
from tests.conftest import Deployment, events

CONTRACT = {"timestamp", "level", "logger", "message"}
RUN_CONTEXT = {"job", "run_id", "slot", "attempt"}

MISBEHAVING = """
import logging, os, signal, subprocess, sys, time
from jobhost import job, every

log = logging.getLogger(__name__)
SCHEDULE = every({interval}).{unit}

@job(SCHEDULE)
def succeeds():
    print("hello from a job")
    log.warning("rows loaded: %s", 3, extra={{"rows": 3}})

@job(SCHEDULE)
def raises():
    raise ValueError("bad input in row 7")

@job(SCHEDULE, timeout="1s")
def hangs():
    child = subprocess.Popen(["sleep", "300"])
    with open({pidfile!r}, "a") as out:
        out.write(f"{{child.pid}}\\n")
    time.sleep(300)

@job(SCHEDULE)
def exits_3():
    os._exit(3)

@job(SCHEDULE)
def killed():
    os.kill(os.getpid(), signal.SIGKILL)

@job(SCHEDULE)
def noisy():
    out = sys.stdout.buffer
    out.write(b"bad \\xff\\xfe utf8\\n")
    out.write(b"x" * 1_000_000 + b"\\n")
    out.write(b"\\x00binary\\x1b[31m\\n")
    out.flush()
    os.write(2, b"last words without a newline")

@job(SCHEDULE, isolation="thread")
def tiny():
    print("from a thread")
"""

EXPECTED = {
    "succeeds": ("succeeded", ""),
    "raises": ("failed", "ValueError: bad input in row 7"),
    "hangs": ("timed_out", "timeout"),
    "exits_3": ("crashed", "exited with code 3"),
    "killed": ("crashed", "killed by SIGKILL (perhaps out of memory?)"),
    "noisy": ("succeeded", ""),
    "tiny": ("succeeded", ""),
}


def _write_misbehaving(deployment: Deployment, interval: int = 1, unit: str = "hours") -> Path:
    pidfile = deployment.tmp / "grandchildren.pids"
    deployment.write("misbehaving", MISBEHAVING.format(interval=interval, unit=unit, pidfile=str(pidfile)))
    return pidfile


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose; look at its state.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"


def _assert_contract(lines: list[str]) -> list[dict]:
    records = []
    for line in lines:
        record = json.loads(line)  # every line is JSON, whatever the job wrote
        assert set(record) >= CONTRACT, record
        if record.get("logger") != "jobhost.host":
            assert set(record) >= RUN_CONTEXT, record
        records.append(record)
    return records


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_run_command_reports_each_way_a_job_can_end(deployment: Deployment, name: str) -> None:
    pidfile = _write_misbehaving(deployment)
    result = deployment.cli("run", name)
    status, reason = EXPECTED[name]
    assert result.returncode == (0 if status == "succeeded" else 1), result.stdout + result.stderr
    records = _assert_contract(result.stdout.splitlines())
    ends = [r for r in records if r.get("event", "").startswith("run_") and r["event"] != "run_started"]
    assert [r["status"] for r in ends] == [status]
    assert reason in ends[0].get("reason", "")
    [run] = deployment.history(name)
    assert (run["status"], run["job"], run["attempt"]) == (status, name, 1)
    assert reason in run["reason"]
    assert run["ended"] is not None and run["duration_ms"] >= 0
    if name == "hangs":
        assert "time.sleep(300)" in ends[0]["exc_info"], "the traceback shows where the job hung"
        for pid in map(int, pidfile.read_text().split()):
            assert not _alive(pid), "the job's grandchild outlived its timeout"
    if name == "raises":
        assert 'raise ValueError("bad input in row 7")' in ends[0]["exc_info"]


def test_output_of_a_run_keeps_its_context_and_cannot_break_the_stream(deployment: Deployment) -> None:
    _write_misbehaving(deployment)
    result = deployment.cli("run", "noisy")
    records = _assert_contract(result.stdout.splitlines())
    output = [r for r in records if r["logger"] == "jobhost.output"]
    messages = [r["message"] for r in output]
    assert "bad \\xff\\xfe utf8" in messages
    assert "".join(m for m in messages if set(m) == {"x"}) == "x" * 1_000_000
    assert max(len(line) for line in result.stdout.splitlines()) < 64 * 1024
    assert "\x00binary\x1b[31m" in messages
    assert {"message": "last words without a newline", "stream": "stderr"}.items() <= next(
        r for r in output if r["message"].startswith("last words")
    ).items()


def test_job_logs_and_prints_carry_the_run_context(deployment: Deployment) -> None:
    _write_misbehaving(deployment)
    records = _assert_contract(deployment.cli("run", "succeeds").stdout.splitlines())
    [started] = events(records, "succeeds", "run_started")
    printed = next(r for r in records if r["message"] == "hello from a job")
    logged = next(r for r in records if r["message"] == "rows loaded: 3")
    assert printed["run_id"] == logged["run_id"] == started["run_id"]
    assert (logged["level"], logged["rows"], logged["logger"]) == ("WARNING", 3, f"{deployment.package}.misbehaving")
    thread = _assert_contract(deployment.cli("run", "tiny").stdout.splitlines())
    assert any(r["message"] == "from a thread" and r["job"] == "tiny" for r in thread)


def test_forever_loop_survives_every_kind_of_failure(deployment: Deployment, host) -> None:
    pidfile = _write_misbehaving(deployment, interval=2, unit="seconds")
    process = host()

    def each_job_ended(records: list[dict]) -> bool:
        ended = {r["job"] for r in records if r.get("event", "run_started") != "run_started" and "job" in r}
        return set(EXPECTED) <= ended

    process.wait_for(each_job_ended, timeout=40, what="one ended run of every job")
    assert process.proc.poll() is None, "the host died"
    assert process.stop() == 0
    records = _assert_contract(process.lines)
    assert records[-1]["event"] == "host_stopped"
    runs = deployment.history()
    for name, (status, reason) in EXPECTED.items():
        ended = [r for r in runs if r["job"] == name and r["status"] not in ("running", "skipped", "interrupted")]
        assert ended, f"no ended run of {name}"
        assert {r["status"] for r in ended} == {status}, name
        assert all(reason in r["reason"] for r in ended), name
    assert not [r for r in runs if r["status"] == "running"], "a run was left as running after a clean stop"
    for pid in map(int, pidfile.read_text().split()):
        assert not _alive(pid)


def test_sigterm_lets_a_run_finish_within_the_grace(deployment: Deployment, host) -> None:
    deployment.write(
        "slow",
        """
        import time
        from jobhost import job, every

        @job(every(1).seconds, timeout="1m")
        def slow():
            time.sleep(2)
            print("finished")
        """,
    )
    process = host(JOBS_STOP_GRACE="30s")
    process.wait_for(lambda rs: events(rs, "slow", "run_started"), what="a run to start")
    assert process.stop() == 0
    records = process.records()
    assert events(records, "slow", "run_succeeded"), "the run in flight was not allowed to finish"
    assert records[-1]["event"] == "host_stopped"


def test_runs_past_the_stop_grace_are_recorded_interrupted(deployment: Deployment, host) -> None:
    deployment.write(
        "stuck",
        """
        import time
        from jobhost import job, every

        @job(every(1).seconds, timeout="1h")
        def stuck():
            time.sleep(600)
        """,
    )
    process = host(JOBS_STOP_GRACE="1s")
    records = process.wait_for(lambda rs: events(rs, "stuck", "run_started"), what="a run to start")
    run_id = events(records, "stuck", "run_started")[0]["run_id"]
    assert process.stop() == 0
    [record] = [r for r in deployment.history("stuck") if r["run_id"] == run_id]
    assert record["status"] == "interrupted"
    assert "SIGTERM" in record["reason"]


def test_a_second_sigterm_stops_at_once(deployment: Deployment, host) -> None:
    deployment.write(
        "stuck",
        """
        import signal, time
        from jobhost import job, every

        @job(every(1).seconds, timeout="1h")
        def ignores_sigterm():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(600)
        """,
    )
    process = host(JOBS_STOP_GRACE="5m")
    process.wait_for(lambda rs: events(rs, "ignores_sigterm", "run_started"), what="a run to start")
    process.proc.send_signal(signal.SIGTERM)
    process.wait_for(lambda rs: any(r.get("event") == "host_stopping" for r in rs), what="the first SIGTERM")
    assert process.stop(timeout=15) == 0
    assert [r["status"] for r in deployment.history("ignores_sigterm")][-1] == "interrupted"


def test_a_run_whose_host_was_killed_is_abandoned_at_the_next_start(deployment: Deployment, host) -> None:
    deployment.write(
        "long",
        """
        import os, time
        from jobhost import job, every

        @job(every(1).seconds, timeout="1h")
        def long():
            time.sleep(600)
        """,
    )
    first = host()
    records = first.wait_for(lambda rs: events(rs, "long", "run_started"), what="a run to start")
    run_id = events(records, "long", "run_started")[0]["run_id"]
    [running] = [r for r in deployment.history("long") if r["run_id"] == run_id]
    first.proc.kill()
    first.proc.wait(10)
    # The run's process does not outlive its host (it is set to die with it).
    deadline = time.monotonic() + 10
    while _alive(running["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(running["pid"])
    second = host(JOBS_STOP_GRACE="1s")  # it catches up the slow job; no need to wait for it
    second.wait_for(lambda rs: any(r.get("run_id") == run_id for r in rs), what="the abandoned run")
    second.stop()
    [record] = [r for r in deployment.history("long") if r["run_id"] == run_id]
    assert record["status"] == "abandoned"
    assert "host stopped before the run ended" in record["reason"]


def _intervals(runs: list[dict]) -> list[tuple[dt.datetime, dt.datetime]]:
    return sorted(
        (dt.datetime.fromisoformat(r["started"]), dt.datetime.fromisoformat(r["ended"]))
        for r in runs
        if r["started"] and r["ended"]
    )


def _most_at_once(intervals: list[tuple[dt.datetime, dt.datetime]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


SLEEPERS = """
import time
from jobhost import job, every

@job(every(1).seconds, overlap="{overlap}")
def first():
    time.sleep(1.5)

@job(every(1).seconds, overlap="{overlap}")
def second():
    time.sleep(1.5)
"""


def test_no_more_than_max_workers_runs_at_once(deployment: Deployment, host) -> None:
    deployment.write("sleepers", SLEEPERS.format(overlap="skip"))
    process = host(JOBS_MAX_WORKERS="1")
    process.wait_for(lambda rs: len([r for r in rs if r.get("event") == "run_succeeded"]) >= 3, what="three runs")
    assert process.stop() == 0
    runs = deployment.history()
    assert _most_at_once(_intervals(runs)) == 1
    assert {r["job"] for r in runs if r["status"] == "succeeded"} == {"first", "second"}


def test_overlap_allow_runs_slots_side_by_side(deployment: Deployment, host) -> None:
    deployment.write("sleepers", SLEEPERS.format(overlap="allow"))
    process = host(JOBS_MAX_WORKERS="8")
    process.wait_for(lambda rs: len(events(rs, "first", "run_succeeded")) >= 3, what="three runs of first")
    assert process.stop() == 0
    runs = list(deployment.history("first"))
    assert not [r for r in runs if r["status"] == "skipped"]
    assert _most_at_once(_intervals(runs)) >= 2


def test_overlap_queue_runs_slots_one_after_another(deployment: Deployment, host) -> None:
    deployment.write(
        "queued",
        """
        import time
        from jobhost import job, every

        @job(every(1).seconds, overlap="queue")
        def queued():
            time.sleep(1.2)
        """,
    )
    process = host(JOBS_MAX_WORKERS="8")
    process.wait_for(lambda rs: len(events(rs, "queued", "run_succeeded")) >= 3, what="three runs")
    assert process.stop() == 0
    runs = list(reversed(deployment.history("queued")))
    done = [r for r in runs if r["status"] == "succeeded"][:3]
    slots = [dt.datetime.fromisoformat(r["slot"]) for r in done]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(slots)] == [1.0, 1.0]
    assert _most_at_once(_intervals(runs)) == 1
    # A job slower than its schedule keeps one slot waiting, not a growing queue.
    assert all("already queued" in r["reason"] for r in runs if r["status"] == "skipped")


def test_health_follows_the_heartbeat_and_a_second_loop_is_refused(deployment: Deployment, host) -> None:
    deployment.write(
        "idle",
        """
        from jobhost import job, every

        @job(every(1).hours)
        def idle():
            pass
        """,
    )
    assert deployment.cli("health").returncode == 1  # no loop has run yet
    process = host(JOBS_HEARTBEAT_INTERVAL="1s")
    process.wait_for(lambda rs: any(r.get("event") == "host_started" for r in rs), what="the host to start")
    healthy = deployment.cli("health", "--max-age", "5")
    assert healthy.returncode == 0 and healthy.stdout.startswith("healthy: last heartbeat")
    second = deployment.cli(timeout=20)
    assert second.returncode == 1
    assert f"another host loop (pid {process.proc.pid})" in json.loads(second.stdout.splitlines()[-1])["message"]
    process.proc.send_signal(signal.SIGSTOP)  # a loop that is up but stuck
    try:
        deadline = time.monotonic() + 15
        while deployment.cli("health", "--max-age", "2").returncode == 0:
            assert time.monotonic() < deadline, "health stayed 0 for a stopped loop"
            time.sleep(0.5)
        stuck = deployment.cli("health", "--max-age", "2")
        assert "the loop is stuck" in stuck.stdout
    finally:
        process.proc.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 15
    while deployment.cli("health", "--max-age", "2").returncode != 0:
        assert time.monotonic() < deadline, "health did not recover after SIGCONT"
        time.sleep(0.5)
    assert process.stop() == 0
    stopped = deployment.cli("health")
    assert stopped.returncode == 1 and "stopped cleanly" in stopped.stdout


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_the_loop_stays_idle_while_a_long_run_outlives_short_ones(deployment: Deployment, host) -> None:
    deployment.write(
        "mixed",
        """
        import time
        from jobhost import job, every

        @job(every(1).seconds)
        def a_short():  # forked before b_long in a shared slot: b_long inherits its pipes
            print("short")

        @job(every(5).seconds, timeout="1m")
        def b_long():
            time.sleep(50)
        """,
    )
    process = host(JOBS_STOP_GRACE="1s")
    process.wait_for(lambda rs: len(events(rs, "a_short", "run_succeeded")) >= 2, what="short runs")
    process.wait_for(lambda rs: events(rs, "b_long", "run_started"), what="the long run")
    before = _cpu_seconds(process.proc.pid)
    process.wait_for(lambda rs: len(events(rs, "a_short", "run_succeeded")) >= 8, what="more short runs")
    used = _cpu_seconds(process.proc.pid) - before
    assert used < 1.5, f"the host used {used:.2f} s of CPU in about 6 s of mostly waiting"
    assert process.stop() == 0


def test_output_no_run_pipe_captures_and_clashing_extras_stay_json(deployment: Deployment, host) -> None:
    deployment.write(
        "odd",
        """
        import logging, subprocess
        from jobhost import job, every

        @job(every(1).seconds, isolation="thread")
        def thread_with_subprocess():
            subprocess.run(["echo", "from a subprocess of a thread job"], check=True)

        @job(every(1).hours)
        def clashing_extras():
            logging.getLogger("odd").info("hello", extra={"level": "bogus", "logger": "x", "job": "other"})
        """,
    )
    result = deployment.cli("run", "clashing_extras")
    [line] = [json.loads(x) for x in result.stdout.splitlines() if '"hello"' in x]
    assert (line["level"], line["logger"], line["job"]) == ("INFO", "odd", "clashing_extras")
    assert (line["extra_level"], line["extra_logger"], line["extra_job"]) == ("bogus", "x", "other")
    process = host()
    records = process.wait_for(
        lambda rs: any(r["message"] == "from a subprocess of a thread job" for r in rs), what="the stray line"
    )
    assert process.stop() == 0
    _assert_contract(process.lines)  # every line JSON, the stray one included
    stray = next(r for r in records if r["message"] == "from a subprocess of a thread job")
    assert stray["event"] == "stray_output"


CATCHUP = """
from jobhost import job, every

@job(every(1).seconds, catchup="latest")
def latest():
    pass

@job(every(1).seconds, catchup="all")
def all_slots(slot):
    pass

@job(every(1).seconds, catchup="none")
def none():
    pass
"""


def test_slots_missed_while_the_host_was_down_follow_each_jobs_policy(deployment: Deployment, host) -> None:
    deployment.write("catchup", CATCHUP)
    first = host()
    first.wait_for(lambda rs: len(events(rs, "none", "run_succeeded")) >= 2, what="a few runs")
    assert first.stop() == 0
    before = {r["run_id"] for r in deployment.history()}
    stopped_at = dt.datetime.now(dt.UTC)
    time.sleep(3)  # the host is down for three slots or more
    second = host()
    second.wait_for(lambda rs: any(r.get("event") == "host_started" for r in rs), what="the restart")
    second.wait_for(lambda rs: len(events(rs, "all_slots", "run_succeeded")) >= 3, what="the catch-up runs")
    assert second.stop() == 0
    new = [r for r in deployment.history() if r["run_id"] not in before]

    def down(job: str, status: str) -> list[str]:
        return sorted(
            r["slot"]
            for r in new
            if r["job"] == job and r["status"] == status and dt.datetime.fromisoformat(r["slot"]) > stopped_at
        )

    missed_none = down("none", "missed")
    assert len(missed_none) >= 3 and not [s for s in down("none", "succeeded") if s <= missed_none[-1]]
    missed_latest, ran_latest = down("latest", "missed"), down("latest", "succeeded")
    assert missed_latest and ran_latest and ran_latest[0] > missed_latest[-1]
    assert len(down("all_slots", "succeeded")) >= 3 and not down("all_slots", "missed")
    _assert_contract(second.lines)
    assert events(second.records(), "none", "run_missed")


def test_a_failed_slot_is_retried_and_a_pending_retry_survives_a_restart(deployment: Deployment, host) -> None:
    deployment.write(
        "flaky",
        """
        from jobhost import job, every

        @job(every(2).seconds, retries=1, retry_delay="4s")
        def broken():
            raise RuntimeError("still broken")
        """,
    )
    first = host()
    records = first.wait_for(lambda rs: events(rs, "broken", "run_retrying"), what="a first failed attempt")
    assert first.stop() == 0  # before the retry is due: it must survive the restart
    [retrying] = events(records, "broken", "run_retrying")[:1]
    assert (retrying["attempt"], retrying["status"]) == (1, "failed") and "retry_at" in retrying
    second = host()
    second.wait_for(
        lambda rs: any(r.get("event") == "run_failed" and r["slot"] == retrying["slot"] for r in rs),
        what="the retry of that slot, after the restart",
    )
    assert second.stop() == 0
    attempts = [r for r in deployment.history("broken") if r["slot"] == retrying["slot"]]
    assert sorted((r["attempt"], r["status"]) for r in attempts) == [(1, "failed"), (2, "failed")]


def test_an_outcome_left_by_a_run_whose_host_died_is_recorded_not_rerun(deployment: Deployment, host) -> None:
    deployment.write(
        "once",
        """
        from jobhost import job, every

        @job(every(1).hours)
        def once():
            pass
        """,
    )
    # As a host leaves things when it is killed after its run exited but before it recorded the end:
    state = deployment.tmp / "state.sqlite3"
    slot = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    store = open_store(f"sqlite:///{state}", deployment.tmp)
    store.add_run(RunRecord("r-left", "once", slot, 1, RunStatus.RUNNING, host=socket.gethostname(), pid=2**22 + 7))
    store.close()
    results = state.with_name(state.name + ".runs")
    results.mkdir()
    (results / "r-left.json").write_text('{"ok": true}')
    process = host()
    process.wait_for(lambda rs: any(r.get("run_id") == "r-left" for r in rs), what="the left outcome")
    assert process.stop() == 0
    [record] = [r for r in deployment.history("once") if r["run_id"] == "r-left"]
    assert record["status"] == "succeeded" and "recorded at the next start" in record["reason"]
    assert not (results / "r-left.json").exists()
    assert [r["slot"] for r in deployment.history("once") if r["status"] == "succeeded"] == [slot.isoformat()]
