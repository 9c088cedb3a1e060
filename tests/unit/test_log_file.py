"""The host's own log file (JOBS_LOG_FILE) against real files: rotated only between lines.

Every line must be whole, once, and in order across jobs.log.N ... jobs.log, however
long (256 KB, the longest a shipper takes whole) and however many rotations it
crosses; a file removed or renamed under the writer is reopened; a full disk drops
lines (counted), never half of one, and writing goes on once there is room.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from configuration.log_stream import BoundedOutput, LogFile
from tests.conftest import ROOT, fill_filesystem, require
from tests.support.sentry_servers import wait_until

LONG = 256 * 1000  # the documented longest line, in bytes


def _line(number: int, size: int) -> bytes:
    """A JSON line of about `size` bytes that says its number."""
    head = json.dumps({"n": number, "pad": ""})
    return json.dumps({"n": number, "pad": "x" * max(0, size - len(head) - 1)}).encode() + b"\n"


def _files(path: Path) -> list[Path]:
    """The log and its backups, oldest first."""
    backups = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    return [*backups, *([path] if path.exists() else [])]


def _numbers(path: Path) -> list[int]:
    """The line numbers across every file, oldest first; each line must be whole JSON."""
    numbers = []
    for file in _files(path):
        for raw in file.read_bytes().splitlines(keepends=True):
            assert raw.endswith(b"\n"), f"a line of {file.name} has no end"
            numbers.append(json.loads(raw)["n"])
    return numbers


def _write(output: BoundedOutput, lines: list[bytes]) -> None:
    for line in lines:
        assert output.put(line)
    assert output.drain(30)


def test_lines_of_256_kb_and_of_mixed_sizes_cross_many_rotations_whole_and_in_order(tmp_path: Path) -> None:
    path = tmp_path / "jobs.log"
    sink = LogFile(path, max_bytes=600 * 1024, backups=100)
    output = BoundedOutput(sink, limit=64 * 1024 * 1024)
    sizes = [LONG, 90, 70_000, LONG, 5_000, 200_000, 65_537, LONG, 300]
    lines = [_line(n, sizes[n % len(sizes)]) for n in range(120)]
    _write(output, lines)
    assert _numbers(path) == list(range(120))
    files = _files(path)
    assert len(files) >= 15  # many rotations were crossed
    for file in files:
        assert file.stat().st_size <= 600 * 1024
    assert {oct(file.stat().st_mode & 0o777) for file in files} == {"0o640"}


def test_two_processes_writing_one_file_rotate_it_at_its_size_once_each_time(tmp_path: Path) -> None:
    """The loop and a keeper of a run it handed over: every line of each, once and in its order,
    and no file past the size, however the two writers' rotations meet."""
    path = tmp_path / "jobs.log"
    writers = []
    for first in (0, 100_000):
        pid = os.fork()
        if pid == 0:  # a writer of its own, as a keeper is
            code = 1
            try:
                sink = LogFile(path, max_bytes=64 * 1024, backups=1000)
                for n in range(first, first + 3000):
                    assert sink.write([_line(n, 120 + n % 700)]) == 1
                code = 0
            finally:
                os._exit(code)
        writers.append(pid)
    for pid in writers:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    numbers = _numbers(path)
    assert [n for n in numbers if n < 100_000] == list(range(3000))
    assert [n for n in numbers if n >= 100_000] == list(range(100_000, 103_000))
    files = _files(path)
    assert len(files) >= 20
    assert all(file.stat().st_size <= 64 * 1024 for file in files), [f.stat().st_size for f in files]


def test_a_line_longer_than_the_maximum_has_a_file_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "jobs.log"
    output = BoundedOutput(LogFile(path, max_bytes=100_000, backups=10))
    _write(output, [_line(0, 50), _line(1, LONG), _line(2, 50)])
    assert [file.read_bytes() for file in _files(path)] == [_line(0, 50), _line(1, LONG), _line(2, 50)]


def test_only_the_backups_asked_for_are_kept_and_they_are_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "jobs.log"
    output = BoundedOutput(LogFile(path, max_bytes=250_000, backups=3))
    _write(output, [_line(n, 100_000) for n in range(40)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.log", "jobs.log.1", "jobs.log.2", "jobs.log.3"]
    numbers = _numbers(path)
    assert numbers == list(range(40 - len(numbers), 40))  # the newest, in order; two lines a file
    assert len(numbers) == 8


def test_a_file_removed_or_renamed_under_the_writer_is_made_again(tmp_path: Path) -> None:
    path = tmp_path / "jobs.log"
    output = BoundedOutput(LogFile(path, max_bytes=0, backups=10))
    _write(output, [_line(0, 100)])
    path.unlink()  # logrotate, or a person
    _write(output, [_line(1, 100)])
    assert path.read_bytes() == _line(1, 100)
    path.rename(tmp_path / "jobs.log.old")
    _write(output, [_line(2, 100)])
    assert path.read_bytes() == _line(2, 100)
    assert (tmp_path / "jobs.log.old").read_bytes() == _line(1, 100)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory another user can reach and write (pytest's own are root's alone)."""
    directory = Path(tempfile.mkdtemp(prefix="jobhost-log-"))
    directory.chmod(0o777)
    yield directory
    shutil.rmtree(directory)


def test_a_file_this_user_may_not_write_is_rotated_away_at_start(open_dir: Path) -> None:
    """The file supervisord wrote as root, before the host wrote its own log as the job user."""
    require("root", os.geteuid() == 0, "the test opens the file as another user (./dev test runs as root)")
    tmp_path = open_dir
    path = tmp_path / "jobs.log"
    path.write_bytes(b"supervisord's line\n")
    (tmp_path / "jobs.log.1").write_bytes(b"an older one\n")
    as_nobody = (
        "import os, sys; from pathlib import Path; from configuration.log_stream import LogFile; "
        "os.setgid(65534); os.setuid(65534); LogFile(Path(sys.argv[1]), 0, 10).write([b'the host line\\n'])"
    )
    subprocess.run([sys.executable, "-c", as_nobody, str(path)], check=True, cwd=ROOT)
    assert [file.read_bytes() for file in _files(path)] == [
        b"an older one\n",
        b"supervisord's line\n",
        b"the host line\n",
    ]


def test_a_full_disk_drops_whole_lines_counts_them_and_writing_resumes_once_there_is_room(small_fs: Path) -> None:
    path = small_fs / "jobs.log"
    output = BoundedOutput(LogFile(path, max_bytes=1024 * 1024, backups=10), limit=1024 * 1024)
    _write(output, [_line(n, 10_000) for n in range(10)])
    filler = fill_filesystem(small_fs)
    accepted = [n for n in range(10, 400) if output.put(_line(n, 10_000), notice=_notice)]
    wait_until(lambda: output.sink.error is not None, what="the write to fail on the full disk")
    assert output.sink.error.errno == 28  # ENOSPC, for real
    assert len(accepted) < 390  # the queue filled: lines were dropped
    filler.unlink()  # room again
    assert output.drain(30)  # what waited is written
    assert output.put(_line(400, 10_000), notice=_notice)
    assert output.drain(30)
    assert output.sink.error is None
    lines = [json.loads(raw) for file in _files(path) for raw in file.read_bytes().splitlines()]  # every one whole
    written = [line["n"] for line in lines if "n" in line]
    assert written == list(range(10)) + accepted + [400]  # what was queued was kept, in order
    [notice] = [line for line in lines if "lost" in line]
    assert notice["lost"] == 390 - len(accepted)  # every line dropped is counted


def _notice(lost: int) -> bytes:
    return json.dumps({"lost": lost}).encode() + b"\n"
