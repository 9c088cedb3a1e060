"""End to end: what a run's process, and whatever it leaves behind, holds of the host."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import Deployment, events

DAEMON = """
import os, time
from jobhost import job, every

@job(every(1).seconds)
def starts_daemon():
    try:
        marker = os.open({pidfile!r}, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:  # one daemon is enough
        return
    child = os.fork()
    if child == 0:  # a daemon by the book: a session of its own, forked twice, no exec
        os.setsid()
        if os.fork() == 0:
            os.write(marker, str(os.getpid()).encode())
            os.close(marker)
            time.sleep(600)
        os._exit(0)
    os.close(marker)
    os.waitpid(child, 0)
"""


def _state_files(deployment: Deployment) -> set[tuple[int, int]]:
    """(device, inode) of the state file and every file SQLite and the host keep beside it."""
    state = deployment.tmp / "state.sqlite3"
    found = set()
    for path in (state, *state.parent.glob(state.name + "-*"), state.with_name(state.name + ".lock")):
        with contextlib.suppress(FileNotFoundError):
            info = path.stat()
            found.add((info.st_dev, info.st_ino))
    return found


def _descriptors(pid: int) -> dict[int, tuple[str, tuple[int, int]]]:
    """What each open descriptor of `pid` refers to: its link text and (device, inode)."""
    held = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            link = f"/proc/{pid}/fd/{name}"
            info = os.stat(link)
            held[int(name)] = (os.readlink(link), (info.st_dev, info.st_ino))
    return held


def _wait_for_pid(path: Path, process) -> int:
    process.wait_for(lambda rs: path.exists() and path.read_text().strip() != "", what="the daemon to start")
    return int(path.read_text())


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_a_daemon_a_job_left_behind_holds_nothing_of_the_host_and_blocks_no_restart(
    deployment: Deployment, host, stop: signal.Signals
) -> None:
    pidfile = deployment.tmp / "daemon.pid"
    deployment.write("daemons", DAEMON.format(pidfile=str(pidfile)))
    first = host(JOBS_HTTP_ADDR="127.0.0.1:0")
    daemon = _wait_for_pid(pidfile, first)
    try:
        first.wait_for(lambda rs: events(rs, "starts_daemon", "run_succeeded"), what="the run that started it")
        first.proc.send_signal(stop)
        assert first.proc.wait(40) == (0 if stop == signal.SIGTERM else -stop)
        held = _descriptors(daemon)  # the daemon lives on, as its job meant it to
        state = _state_files(deployment)
        assert not [fd for fd, (_, inode) in held.items() if inode in state], f"holds the state store: {held}"
        assert not [fd for fd, (link, _) in held.items() if link.startswith("socket:")], f"holds a socket: {held}"
        # Beyond /dev/null, only the pipes of its run (its output and log records go to the run).
        extra = {fd: link for fd, (link, _) in held.items() if link != os.devnull and not link.startswith("pipe:")}
        assert not extra, f"the daemon kept descriptors of the host: {extra}"
        pipes = {inode for link, inode in held.values() if link.startswith("pipe:")}
        assert len(pipes) <= 3, f"pipes of the host besides its run's stdout, stderr and records: {held}"

        second = host()
        second.wait_for(lambda rs: any(r.get("event") == "host_started" for r in rs), what="the second host")
        second.wait_for(lambda rs: events(rs, "starts_daemon", "run_succeeded"), what="a run on the second host")
        assert second.stop() == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon, signal.SIGKILL)
    assert not [r for r in deployment.history("starts_daemon") if r["status"] == "running"]


CLOSES_EVERYTHING = """
import os, pathlib, shutil
from jobhost import job, every

@job(every(1).hours)
def closes_and_returns():
    os.closerange(0, 1 << 16)

@job(every(1).hours)
def closes_and_raises():
    os.closerange(0, 1 << 16)
    raise ValueError("row 7")

@job(every(1).hours)
def closes_with_nowhere_to_leave_its_outcome():
    state = pathlib.Path(os.environ["JOBS_STATE_URL"].removeprefix("sqlite:///"))
    shutil.rmtree(state.with_name(state.name + ".runs"))
    os.closerange(0, 1 << 16)
"""


@pytest.mark.parametrize(
    ("name", "code", "status", "reason"),
    [
        ("closes_and_returns", 0, "succeeded", "could not report it to the host"),
        ("closes_and_raises", 1, "failed", "ValueError: row 7"),
        ("closes_with_nowhere_to_leave_its_outcome", 0, "succeeded", "the job returned, but its process could not"),
    ],
)
def test_a_job_that_closes_every_descriptor_is_recorded_as_it_ended(
    deployment: Deployment, name: str, code: int, status: str, reason: str
) -> None:
    deployment.write("closers", CLOSES_EVERYTHING)
    result = deployment.cli("run", name)
    [run] = deployment.history(name)
    assert (result.returncode, run["status"]) == (code, status), run
    assert reason in run["reason"]
    assert "could not be set up" not in run["reason"]
