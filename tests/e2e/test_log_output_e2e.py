"""The host's own log output fails for real: its stdout closed (`| head -1`) or never read.

The host must go on running and recording its jobs, stop on SIGTERM within the
grace, and say how many log lines it could not write.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections import Counter

from tests.conftest import ROOT, Deployment
from tests.support.sentry_servers import wait_until

CHATTY = """
    import logging
    from jobhost import job, every

    @job(every(1).seconds)
    def chatty():
        logging.getLogger("chatty").info("a record of the job")
        print("a line the job prints")
        print("x" * {size})
"""
STOP_WAIT = 40  # the test's bound on a stop that takes the grace (JOBS_STOP_GRACE below) and the exit


def _start(deployment: Deployment) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "jobs.py")],
        env={**deployment.env, "JOBS_STOP_GRACE": "10"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=deployment.tmp,
    )


def _succeeded(deployment: Deployment) -> list[dict]:
    return [run for run in deployment.history("chatty") if run["status"] == "succeeded"]


def _assert_history_whole(deployment: Deployment) -> None:
    """Nothing left running, no attempt of a slot recorded twice."""
    runs = deployment.history("chatty")
    assert runs, "nothing was recorded"
    assert [run for run in runs if run["status"] == "running"] == []
    twice = [key for key, count in Counter((run["slot"], run["attempt"]) for run in runs).items() if count > 1]
    assert twice == []


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(STOP_WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_host_goes_on_and_stops_when_its_stdout_is_closed(deployment: Deployment) -> None:
    deployment.write("chatty", CHATTY.format(size=100))
    proc = _start(deployment)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert json.loads(proc.stdout.readline())["event"] == "host_started"
        proc.stdout.close()  # what `| head -1` does after its line: the reader is gone (EPIPE)
        before = len(_succeeded(deployment))
        wait_until(lambda: len(_succeeded(deployment)) >= before + 3, what="runs recorded after stdout closed")
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    _assert_history_whole(deployment)
    said = proc.stderr.read().decode()
    assert "log lines could not be written to stdout (stdout cannot be written: Broken pipe)" in said
    assert "Traceback" not in said


def test_host_goes_on_and_says_what_was_lost_when_its_stdout_is_not_read(deployment: Deployment) -> None:
    # 2 MiB a run: six runs fill the pipe and the host's 8 MiB of waiting lines.
    deployment.write("chatty", CHATTY.format(size=2 * 1024 * 1024))
    proc = _start(deployment)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        wait_until(lambda: len(_succeeded(deployment)) >= 6, what="runs recorded while stdout is not read")
        reader = threading.Thread(target=lambda: lines.extend(line.decode() for line in proc.stdout), daemon=True)
        reader.start()  # the reader comes back: the output flows again
        wait_until(lambda: any('"log_lines_lost"' in line for line in list(lines)), what="the count of lost lines")
        assert _stop(proc) == 0
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    records = [json.loads(line) for line in lines]  # every line that was written is whole JSON
    lost = [r for r in records if r.get("event") == "log_lines_lost"]
    assert lost[0]["lost"] > 0 and lost[0]["level"] == "WARNING"
    assert records[0]["event"] == "host_started" and records[-1]["event"] == "host_stopped"
    _assert_history_whole(deployment)


def test_the_text_format_shows_the_fields_a_job_logged(deployment: Deployment) -> None:
    deployment.write(
        "measures",
        "import logging\nfrom jobhost import job, every\n\n@job(every().day.at('03:00'))\ndef measures():\n"
        "    logging.getLogger('measures').warning('disk low', extra={'free_percent': 7})\n",
    )
    ran = deployment.cli("run", "measures", JOBS_LOG_FORMAT="text")
    assert ran.returncode == 0, ran.stderr
    [line] = [line for line in ran.stdout.splitlines() if "disk low" in line]
    assert line.endswith("disk low  free_percent=7"), line
