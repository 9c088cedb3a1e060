"""End to end: the terminal of a host closes (SIGHUP): the host stops as on SIGTERM, and no run is
left `running`."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import termios

from tests.conftest import ROOT, Deployment

SLOW = """
import time
from jobhost import job, every

@job(every(1).{unit}, timeout="1h")
def slow():
    print("started", flush=True)
    time.sleep({seconds})
"""


def _on_a_terminal(deployment: Deployment, **env: str) -> tuple[subprocess.Popen, int]:
    """`python jobs.py` in a session of its own whose controlling terminal is a new pty, as from an
    ssh login; returns the process and the terminal's master end. Its log goes to a pipe (a log
    stream lost with the terminal is another fault)."""
    master, slave = os.openpty()

    def take_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "jobs.py")],
        env={**deployment.env, **env},
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=deployment.tmp,
        preexec_fn=take_terminal,  # the child has no threads yet
    )
    os.close(slave)
    return proc, master


def _read_until(proc: subprocess.Popen, event: str) -> None:
    """Read the host's log up to its first line with `event` (bounded by the host's own end)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line).get("event") == event:
            return
    raise AssertionError(f"the host ended (code {proc.wait()}) before {event}")


def test_closing_the_terminal_of_the_loop_stops_it_cleanly_and_records_the_run(deployment: Deployment) -> None:
    deployment.write("slow", SLOW.format(unit="seconds", seconds=600))
    proc, master = _on_a_terminal(deployment, JOBS_STOP_GRACE="1s")
    try:
        _read_until(proc, "run_started")
        os.close(master)  # the terminal hangs up: Linux sends the host SIGHUP
        _read_until(proc, "host_stopped")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    runs = deployment.history("slow")
    assert runs and not [r for r in runs if r["status"] == "running"], runs
    assert (runs[0]["status"], "SIGHUP" in runs[0]["reason"]) == ("interrupted", True)
    health = deployment.cli("health", "--max-age", "60")
    assert health.returncode == 1 and "stopped cleanly" in health.stdout
