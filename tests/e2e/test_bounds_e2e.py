"""Bounded inputs, on the real command line and HTTP API: a value out of range is one line naming
the argument (exit 2, HTTP 400), and nothing a person can type leaves the host unable to start."""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import socket
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import ROOT, Deployment, events
from tests.support.http_client import base_url, call

JOBS = """
from jobhost import job, every

@job(every(10).minutes)
def tick():
    pass
"""

TOKEN = "s3cret-token-for-tests-0123456789"
NOT_UTF8 = os.fsdecode(b"caf\xe9")  # Latin-1 bytes, as a terminal set to another encoding sends them


def _refused(result, argument: str) -> str:
    """The one error line of a refused command, which names `argument`."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith(("Error:", "jobhost:"))]
    assert argument in line, line
    return line


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        (("history", "--limit", "99999999999999999999999"), "--limit"),
        (("history", NOT_UTF8), "NAME"),
        (("health", "--host", NOT_UTF8), "--host"),
        (("health", "--max-age", "nan"), "--max-age"),
        (("run", NOT_UTF8), "NAME"),
        (("backfill", "tick", "--from", "2026-01-01", "--to", "9999-12-31"), "--to"),
        (("backfill", "tick", "--from", "0001-01-01"), "--from"),
        (("next", "tick", "--from", "0001-01-01T00:00:00+14:00"), "--from"),
        (("next", "tick", "--from", "9999-12-31T23:59:59-12:00"), "--from"),
        (("run", "tick", "--slot", "0001-01-01T00:00:00+01:00"), "--slot"),
        (("run", "tick", "--slot", "0001-01-01T00:00:00"), "--slot"),
        (("run", "tick", "--slot", "9999-12-31T23:50:00+00:00"), "--slot"),
    ],
)
def test_an_argument_out_of_range_is_one_line_naming_it(deployment: Deployment, args, argument) -> None:
    deployment.write("work", JOBS)
    _refused(deployment.cli(*args), argument)
    assert deployment.history() == []


def test_a_slot_far_from_now_never_reaches_the_store_and_the_host_starts(deployment: Deployment, host) -> None:
    deployment.write("work", JOBS)
    line = _refused(deployment.cli("run", "tick", "--slot", "9999-12-31T23:50:00+00:00"), "--slot")
    assert "20 years" in line
    process = host()
    process.wait_for(lambda rs: any(r.get("event") == "host_started" for r in rs), 30, "the host to start")
    assert process.stop() == 0


def test_a_slot_still_to_come_is_refused_saying_what_to_do(deployment: Deployment) -> None:
    deployment.write("work", JOBS)
    soon = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=20)
    slot = soon.replace(minute=soon.minute // 10 * 10)
    line = _refused(deployment.cli("run", "tick", "--slot", slot.isoformat()), "--slot")
    assert "still to come" in line and "leave the slot out" in line
    assert deployment.history() == []  # the loop runs that slot when it comes, and only then


def test_the_api_bounds_the_slot_as_the_command_line_does(deployment: Deployment, host) -> None:
    deployment.write("work", JOBS)
    process = host(JOBS_HTTP_ADDR="127.0.0.1:0", JOBS_HTTP_TOKEN=TOKEN)
    url = base_url(process)
    process.wait_for(lambda rs: any(r.get("event") == "host_started" for r in rs), 30, "the host to start")
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    for slot, words in [("9999-12-31T23:50:00+00:00", "20 years"), (later.isoformat(), "still to come")]:
        answer = call(f"{url}/api/jobs/tick/run", "POST", token=TOKEN, body=json.dumps({"slot": slot}).encode())
        assert answer.status == 400, answer.body
        assert answer.json()["param"] == "slot" and words in answer.json()["error"]
    assert process.stop() == 0
    assert not events(process.records(), "tick", "run_started")
    assert deployment.history() == []


EVERY_SECOND = """
from jobhost import job, every

@job(every(1).seconds)
def fast():
    pass
"""


def _limited_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


MEMORY_LIMIT = 512 * 1024 * 1024  # bytes of address space: a list of every slot needs gigabytes


def test_a_backfill_of_ten_years_of_an_every_second_job_is_refused_in_bounded_memory(deployment: Deployment) -> None:
    deployment.write("fast", EVERY_SECOND)
    start = (dt.date.today() - dt.timedelta(days=3652)).isoformat()
    result = subprocess.run(
        [sys.executable, str(ROOT / "jobs.py"), "backfill", "fast", "--from", start],
        env=deployment.env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=deployment.tmp,
        preexec_fn=_limited_memory,
    )
    line = _refused(result, "--max-slots")
    assert "more than 10,000 slots" in line
    assert deployment.history() == []


def test_a_range_of_more_slots_than_asked_for_runs_only_with_a_higher_max(deployment: Deployment) -> None:
    deployment.write("work", JOBS)
    hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    start = hour_ago.replace(minute=0, second=0, microsecond=0)
    end = (start + dt.timedelta(minutes=30)).isoformat()
    _refused(
        deployment.cli("backfill", "tick", "--from", start.isoformat(), "--to", end, "--max-slots", "3"), "--max-slots"
    )
    assert deployment.history() == []
    result = deployment.cli("backfill", "tick", "--from", start.isoformat(), "--to", end, "--max-slots", "4")
    assert result.returncode == 0, result.stderr
    assert "4 slot(s) to run" in result.stderr
    ran = sorted(dt.datetime.fromisoformat(r["slot"]) for r in deployment.history())
    assert ran == [start + dt.timedelta(minutes=m) for m in (0, 10, 20, 30)]


def test_a_setting_out_of_range_fails_check_and_the_start_not_the_first_heartbeat(deployment: Deployment) -> None:
    deployment.write("work", JOBS)
    check = deployment.cli("check", JOBS_HISTORY_DAYS="1000000")
    _refused(check, "JOBS_HISTORY_DAYS")
    forever = deployment.cli(JOBS_HISTORY_DAYS="1000000", JOBS_HEARTBEAT_INTERVAL="1s")
    assert forever.returncode == 2
    [line] = forever.stdout.splitlines()
    record = json.loads(line)
    assert record["event"] == "host_start_failed" and "JOBS_HISTORY_DAYS" in record["message"]


def test_a_job_option_too_long_to_be_a_duration_is_named_by_check(deployment: Deployment) -> None:
    deployment.write("work", JOBS + '\n@job(every(1).hours, catchup_window="9" * 400)\ndef windowed():\n    pass\n')
    result = deployment.cli("check")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "work.py:8: job 'windowed': catchup_window must be at most 3650d" in result.stderr
    forever = deployment.cli()  # refuses to start, naming the job, rather than dying in catch-up
    assert forever.returncode == 1 and "Traceback" not in forever.stdout + forever.stderr


def _poison(deployment: Deployment) -> None:
    """Rows no release of this host writes now: what an older release, a hand or a disk left."""
    db = sqlite3.connect(deployment.tmp / "state.sqlite3")
    seq = db.execute("SELECT COALESCE(MAX(seq), 0) FROM runs").fetchone()[0]
    columns = "run_id, job, slot, slot_epoch, attempt, status, reason, started, ended, host, seq"
    far = dt.datetime(9999, 12, 31, 23, 50, tzinfo=dt.UTC)
    rows = [
        ("far-slot", "tick", far.isoformat(), far.timestamp(), 1, "succeeded", "", None, None, "old", seq + 1),
        (
            "year-10000",
            "tick",
            "10000-01-01T00:00:00+00:00",
            far.timestamp() - 600,
            1,
            "succeeded",
            "",
            None,
            None,
            "old",
            seq + 2,
        ),
        (
            "no-such-status",
            "tick",
            "2026-01-05T06:00:00+00:00",
            1767592800.0,
            1,
            "exploded",
            "",
            None,
            None,
            "old",
            seq + 3,
        ),
        (
            "garbled-time",
            "tick",
            "2026-01-05T06:10:00+00:00",
            1767593400.0,
            1,
            "running",
            "",
            "yesterday-ish",
            None,
            socket.gethostname(),
            seq + 4,
        ),
    ]
    db.executemany(f"INSERT INTO runs ({columns}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    db.execute(
        "INSERT INTO retries (job, slot, slot_epoch, attempt, due) VALUES (?, ?, ?, ?, ?)",
        ("tick", far.isoformat(), far.timestamp(), 2, far.isoformat()),
    )
    db.commit()
    db.close()


def test_records_that_cannot_be_interpreted_are_set_aside_and_the_host_starts(deployment: Deployment, host) -> None:
    deployment.write("work", JOBS)
    assert deployment.cli("run", "tick").returncode == 0  # a real run in history, and the state file
    _poison(deployment)
    process = host()
    records = process.wait_for(lambda rs: any(r.get("event") == "host_started" for r in rs), 30, "the host to start")
    aside = [r for r in records if r.get("event") == "record_set_aside"]
    named = {r["record_id"] for r in aside}
    assert {"far-slot", "year-10000", "no-such-status", "garbled-time"} <= named, aside
    assert len(aside) == len(named)  # once each
    assert all(r["job"] == "tick" and r["problem"] for r in aside)
    assert not [r for r in records if r.get("event") == "store_failed"]  # the store is well: nothing failed
    assert deployment.cli("health").returncode == 0
    assert process.stop() == 0
    history = deployment.cli("history", "--json")
    assert history.returncode == 0 and "Traceback" not in history.stderr
    shown = json.loads(history.stdout)
    assert [r["status"] for r in shown] == ["succeeded"]  # the real run; the others are set aside, named
    assert "far-slot" in history.stderr and "no-such-status" in history.stderr
    assert deployment.cli("list", "--json").returncode == 0
