"""The loop's status file on a real full file system and with real garbage in it; the verdicts
health gives from it."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobhost.errors import StoreError
from jobhost.health import Health, Look, Verdict, health, watch
from jobhost.hoststatus import MAGIC, SLOT, State, StatusFile, read_status
from jobhost.store import Heartbeat
from tests.conftest import ROOT, require

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of its own, to fill up."""
    require("root", os.geteuid() == 0, "mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)  # lazy: a failed test may hold a file open


def _fill(directory: Path) -> None:
    with open(directory / "filler", "wb", buffering=0) as filler, pytest.raises(OSError, match="No space left"):
        while True:
            filler.write(b"\0" * 65536)


def test_the_status_file_is_rewritten_on_a_full_file_system(small_fs: Path) -> None:
    status = StatusFile(small_fs / "state.sqlite3.status", "jobs-1", 30)
    status.write(State.RUNNING)
    _fill(small_fs)
    status.write(State.RUNNING, store_failure="the disk is full")
    status.write(State.STOPPING, "SIGTERM")
    assert (read_status(status.path) or pytest.fail("unreadable")).state == State.STOPPING
    status.write(State.STOPPED)
    status.close()
    read = read_status(status.path)
    assert read is not None and read.state == State.STOPPED and read.pid == os.getpid()


def test_a_garbled_slot_leaves_the_other_and_a_garbled_file_is_none(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3.status"
    status = StatusFile(path, "jobs-1", 30)
    status.write(State.RUNNING)
    status.write(State.STOPPING, "SIGTERM")  # the newer slot
    with open(path, "r+b") as stream:  # a write cut in the middle of the newer slot
        stream.seek(SLOT * 0 + 40)
        stream.write(b"\xff" * 100)
    assert (read_status(path) or pytest.fail("unreadable")).state == State.RUNNING
    path.write_bytes(os.urandom(2 * SLOT))
    assert read_status(path) is None
    # A new writer on a garbled file starts again, and readers see it.
    again = StatusFile(path, "jobs-1", 30)
    again.write(State.RUNNING)
    assert (read_status(path) or pytest.fail("unreadable")).state == State.RUNNING


def test_without_a_readable_status_health_reads_the_stores_heartbeat(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3.status"
    path.write_bytes(os.urandom(2 * SLOT))
    fresh = Heartbeat("jobs-1", 4242, NOW - dt.timedelta(seconds=5))
    said = health(read_status(path), lambda: fresh, "jobs-1", None, NOW)
    assert said.verdict == Verdict.BEATING and "pid 4242" in said.message

    def unreadable() -> None:
        raise StoreError("database is locked")

    said = health(None, unreadable, "jobs-1", None, NOW)
    assert said.verdict == Verdict.UNKNOWN and "database is locked" in said.message


def test_each_state_is_its_verdict(tmp_path: Path) -> None:
    status = StatusFile(None, "jobs-1", 30)

    def verdict(alive: bool = True, **written: object) -> Verdict:
        status.write(**written)  # type: ignore[arg-type]
        return health(status.last, lambda: None, "jobs-1", None, NOW, alive=lambda _: alive).verdict

    assert verdict(state=State.RUNNING) == Verdict.BEATING
    assert verdict(state=State.RUNNING, store_failure="disk full") == Verdict.STORE_FAILING
    assert verdict(state=State.STARTING, reason="importing jobs/a.py") == Verdict.STARTING
    assert verdict(state=State.STOPPING, reason="SIGTERM") == Verdict.STOPPING
    assert verdict(state=State.STOPPED) == Verdict.STOPPED
    assert verdict(state=State.REFUSED, reason="JOBS_MAX_WORKERS") == Verdict.REFUSED
    assert verdict(alive=False, state=State.RUNNING) == Verdict.GONE
    assert verdict(alive=False, state=State.REFUSED, reason="x") == Verdict.REFUSED  # a refusal ends its process
    # Another host's name: its status is not this file's; the store's heartbeat answers.
    assert health(status.last, lambda: None, "jobs-2", None, NOW).verdict == Verdict.UNKNOWN


def test_a_reason_long_in_bytes_is_shortened_to_fit_and_the_file_stays_whole(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3.status"
    status = StatusFile(path, "jobs-1", 30)
    status.write(State.RUNNING)
    status.write(State.REFUSED, "ошибка " * 500, store_failure="сбой " * 600)  # two bytes a character
    found = read_status(path)
    assert found is not None and found.state == State.REFUSED and found.reason.startswith("ошибка")
    assert path.stat().st_size == 2 * 4096


def test_a_status_file_removed_under_its_writer_is_made_anew(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3.status"
    status = StatusFile(path, "jobs-1", 30)
    status.write(State.STARTING, "importing jobs")
    path.unlink()  # as a second loop refused in the same instant takes back what it wrote
    status.write(State.RUNNING)
    found = read_status(path)
    assert found is not None and found.state == State.RUNNING and found.pid == os.getpid()


def _slot_of(record: dict, seq: int = 1) -> bytes:
    """One slot as a writer of another release would have written it."""
    body = json.dumps(record).encode()
    return (MAGIC + f"{seq:016x} {zlib.crc32(body):08x} {len(body):04x}\n".encode() + body).ljust(SLOT, b"\0")


def test_the_status_says_which_release_runs_and_since_when_its_process_started(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3.status"
    writer = (
        "import sys; from pathlib import Path; from jobhost.hoststatus import State, StatusFile; "
        "StatusFile(Path(sys.argv[1]), 'jobs-1', 30, release=sys.argv[2]).write(State.RUNNING)"
    )
    before = dt.datetime.now(dt.UTC)
    subprocess.run([sys.executable, "-c", writer, str(path), "3f2a9c1d0b7e" * 3], check=True, cwd=ROOT)
    after = dt.datetime.now(dt.UTC)
    read = read_status(path) or pytest.fail("unreadable")
    assert read.release == "3f2a9c1d0b7e" * 3
    started = dt.datetime.fromisoformat(read.started_at or pytest.fail("no start"))
    # The kernel's boot time is whole seconds: a start is known to within one.
    assert before - dt.timedelta(seconds=1) <= started <= after + dt.timedelta(seconds=1)


def test_records_of_an_older_and_a_newer_release_are_read(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3.status"
    older = {
        "state": "running",
        "host": "jobs-1",
        "pid": 42,
        "at": NOW.isoformat(),
        "boot_clock": 1.0,
        "boot_id": "b",
        "pid_start": 7,
        "heartbeat_interval": 30,
        "reason": "",
        "store_failure": None,
        "state_file": None,
    }
    path.write_bytes(_slot_of(older) + bytes(SLOT))
    read = read_status(path) or pytest.fail("an older record is unreadable")
    assert (read.pid, read.release, read.started_at) == (42, None, None)
    newer = {**older, "release": "abc", "started_at": NOW.isoformat(), "deploy_id": "made up later"}
    path.write_bytes(_slot_of(newer) + bytes(SLOT))
    read = read_status(path) or pytest.fail("a newer record is unreadable")
    assert (read.release, read.started_at) == ("abc", NOW.isoformat())
    path.write_bytes(_slot_of({"pid": 42}) + bytes(SLOT))  # a record missing what every record has
    assert read_status(path) is None


class Clock:
    """A clock that moves only when the watch sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_watch_is_healthy_only_when_every_look_in_the_window_was(tmp_path: Path) -> None:
    beating = Health(Verdict.BEATING, "healthy: last heartbeat 0s ago (pid 411 on jobs-1)")
    gone = Health(Verdict.GONE, "unhealthy: the loop is gone: pid 411 on jobs-1 ended without a clean stop")
    clock = Clock()
    looks = iter([Look(beating, 411)] * 31)
    said = watch(lambda: next(looks), 30, clock=clock, sleep=clock.sleep)
    assert said.healthy and said.message == "healthy for 30.0 s: last heartbeat 0s ago (pid 411 on jobs-1)"
    assert clock.slept == [1.0] * 30  # a look a second, the last at the window's end

    clock = Clock()
    looks = iter([Look(beating, 411)] * 10 + [Look(gone, 411)])
    said = watch(lambda: next(looks), 30, clock=clock, sleep=clock.sleep)
    assert not said.healthy and said.verdict == Verdict.GONE
    assert said.message == (
        "unhealthy 10.0 s into the 30.0 s window: the loop is gone: pid 411 on jobs-1 ended without a clean stop"
    )
    assert len(clock.slept) == 10  # ended at that look, not at the window's end

    clock = Clock()
    again = Health(Verdict.BEATING, "healthy: last heartbeat 0s ago (pid 422 on jobs-1)")
    looks = iter([Look(beating, 411)] * 4 + [Look(again, 422)])
    said = watch(lambda: next(looks), 30, clock=clock, sleep=clock.sleep)
    assert not said.healthy and said.verdict == Verdict.RESTARTED
    assert said.message.startswith("unhealthy 4.0 s into the 30.0 s window: the loop restarted (pid 411, now 422)")
    starting = Health(Verdict.STARTING, "unhealthy: the host is starting (importing jobs/a.py) since 0s ago (pid 422)")
    looks = iter([Look(beating, 411), Look(starting, 422)])
    said = watch(lambda: next(looks), 30, clock=clock, sleep=clock.sleep)
    assert (
        said.verdict == Verdict.RESTARTED
        and "the loop restarted (pid 411, now 422): the host is starting" in said.message
    )

    clock = Clock()
    said = watch(lambda: Look(gone, 411), 30, clock=clock, sleep=clock.sleep)
    assert said.message.startswith("unhealthy 0.0 s into the 30.0 s window: the loop is gone") and not clock.slept
    said = watch(lambda: Look(beating, 411), 0, clock=clock, sleep=clock.sleep)
    assert said.healthy and not clock.slept  # no window: the one look
