"""End to end: one host loop per state file, whatever name it is reached by, and a refusal that
names what really holds the file."""

from __future__ import annotations

import contextlib
import json
import os
import signal

from tests.conftest import Deployment, events

TICK = """
from jobhost import job, every

@job(every(1).seconds)
def tick():
    pass
"""

NATIVE_DAEMON = """
import ctypes, os, time
from jobhost import job, every

@job(every(1).seconds, isolation="thread")
def forks_in_native_code():
    try:
        marker = os.open({pidfile!r}, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:  # one daemon is enough
        return
    # A fork by native code (a C library that daemonizes): Python's own fork hooks do not run.
    # PyDLL keeps the GIL across the call, so the child owns it; CDLL would release it and the
    # child would wait for ever for a GIL another thread held at the fork.
    child = ctypes.PyDLL(None).fork()
    if child == 0:
        os.setsid()
        os.write(marker, str(os.getpid()).encode())
        os.close(marker)
        time.sleep(600)
        os._exit(0)
    os.close(marker)
"""


def _started(process) -> None:
    process.wait_for(lambda rs: any(r.get("event") == "host_started" for r in rs), what="the host to start")


def _refusal(deployment: Deployment, code: int = 1, **env: str) -> str:
    refused = deployment.cli(timeout=30, **env)
    assert refused.returncode == code, refused.stdout + refused.stderr
    return json.loads(refused.stdout.splitlines()[-1])["message"]


def test_a_second_host_on_another_name_of_the_state_file_is_refused(deployment: Deployment, host) -> None:
    deployment.write("ticking", TICK)
    state = deployment.tmp / "state.sqlite3"
    first = host()
    _started(first)
    symlink = deployment.tmp / "another-name.sqlite3"
    symlink.symlink_to(state)
    message = _refusal(deployment, JOBS_STATE_URL=f"sqlite:///{symlink}")
    assert f"another host loop (pid {first.proc.pid})" in message
    assert "the same file under another name" in message and str(state) in message
    # A hard link is refused before the lock is looked at: SQLite keeps a write-ahead log per name.
    link = deployment.tmp / "hard-link.sqlite3"
    os.link(state, link)
    message = _refusal(deployment, 2, JOBS_STATE_URL=f"sqlite:///{link}")
    assert "has 2 names (hard links)" in message, message
    link.unlink()
    first.wait_for(lambda rs: len(events(rs, "tick", "run_succeeded")) >= 2, what="the first host going on")
    assert first.stop() == 0
    runs = deployment.history("tick")
    slots = [r["slot"] for r in runs if r["status"] == "succeeded"]
    assert len(slots) == len(set(slots)), "a slot ran twice"
    assert not [r for r in runs if r["status"] == "running"]


def test_a_lock_held_only_by_a_leftover_process_is_refused_naming_that_process(deployment: Deployment, host) -> None:
    pidfile = deployment.tmp / "daemon.pid"
    deployment.write("native", NATIVE_DAEMON.format(pidfile=str(pidfile)))
    first = host()
    first.wait_for(lambda rs: pidfile.exists() and pidfile.read_text() != "", what="the daemon to start")
    daemon = int(pidfile.read_text())
    try:
        assert first.stop() == 0
        message = _refusal(deployment)
        assert "no host loop is running" in message and f"pid {first.proc.pid}, gone" in message
        assert f"kill {daemon}" in message
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(daemon, 0)
    second = host()
    _started(second)  # the process named is gone: the lock with it
    assert second.stop() == 0
