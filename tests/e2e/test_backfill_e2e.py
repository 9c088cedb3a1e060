"""`jobs.py backfill`: past slots in order, through the normal runner, resumable without repeats."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import signal
import subprocess
import sys
from collections import Counter

from tests.conftest import ROOT, Deployment

DAILY = """
import time
from pathlib import Path
from jobhost import job, every

OUT = Path(__file__).with_name("slots.txt")

@job(every().day.at("02:30", "America/New_York"), retries=1, retry_delay="0s")
def nightly(slot):
    with OUT.open("a") as out:
        out.write(slot.isoformat() + "\\n")
    time.sleep({pause})
"""


def test_backfill_runs_each_missing_slot_once_in_order_with_its_own_slot(deployment: Deployment) -> None:
    deployment.write("daily", DAILY.format(pause=0))
    result = deployment.cli("backfill", "nightly", "--from", "2026-03-07", "--to", "2026-03-09")
    assert result.returncode == 0, result.stderr
    assert (deployment.jobs_dir / "slots.txt").read_text().split() == [
        "2026-03-07T02:30:00-05:00",
        "2026-03-08T03:00:00-04:00",  # 02:30 does not exist that night
        "2026-03-09T02:30:00-04:00",
    ]
    assert "[3/3] 2026-03-09T02:30:00-04:00 succeeded" in result.stderr
    again = deployment.cli("backfill", "nightly", "--from", "2026-03-06", "--to", "2026-03-09")
    assert "1 slot(s) to run, 3 already succeeded" in again.stderr
    assert (deployment.jobs_dir / "slots.txt").read_text().split()[-1] == "2026-03-06T02:30:00-05:00"
    # Each backfill is one audit record, and each of its runs names who ran it.
    actions = json.loads(deployment.cli("audit", "--json").stdout)
    assert [(a["action"], a["target"], a["detail"]["slots"]) for a in actions] == [
        ("backfill", "nightly", 1),
        ("backfill", "nightly", 3),
    ]
    assert {r["requested_by"] for r in deployment.history("nightly")} == {getpass.getuser()}


def test_backfill_refuses_a_reversed_or_future_range(deployment: Deployment) -> None:
    deployment.write("daily", DAILY.format(pause=0))
    reversed_range = deployment.cli("backfill", "nightly", "--from", "2026-03-09", "--to", "2026-03-01")
    assert reversed_range.returncode == 2 and "reversed" in reversed_range.stderr
    next_year = dt.date.today() + dt.timedelta(days=365)
    future = deployment.cli("backfill", "nightly", "--from", next_year.isoformat())
    assert future.returncode == 2 and "in the future" in future.stderr


def test_an_interrupted_backfill_resumes_without_running_a_slot_twice(deployment: Deployment) -> None:
    deployment.write("daily", DAILY.format(pause=1))
    command = [
        sys.executable,
        str(ROOT / "jobs.py"),
        "backfill",
        "nightly",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-06",
    ]
    proc = subprocess.Popen(command, env=deployment.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("[2/6]"):
            break
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 1
    resumed = deployment.cli("backfill", "nightly", "--from", "2026-01-01", "--to", "2026-01-06")
    assert resumed.returncode == 0, resumed.stderr
    succeeded = Counter(r["slot"] for r in deployment.history("nightly") if r["status"] == "succeeded")
    assert len(succeeded) == 6 and set(succeeded.values()) == {1}


def test_wall_times_in_a_dst_gap_follow_the_slot_policy(deployment: Deployment) -> None:
    deployment.write("daily", DAILY.format(pause=0))
    result = deployment.cli("backfill", "nightly", "--from", "2026-03-08T02:30", "--to", "2026-03-08T03:00")
    assert "1 slot(s) to run" in result.stderr  # 02:30 that night is 03:00 EDT, the gap's end
    upcoming = deployment.cli("next", "nightly", "--from", "2026-03-08T02:30", "--count", "1")
    assert upcoming.stdout.split() == ["2026-03-09T02:30:00-04:00"]
