"""The host's log output, written by a thread of its own so that logging never blocks.

Whatever reads the host's stdout may stop reading (a full pipe) or go away (EPIPE).
Written by the thread that logs, a line would then block the loop, with the
logging lock held and its signals unhandled, or raise into it. Here a record is
formatted and queued, the queue is bounded in bytes, and a daemon thread does
the writing. A line the queue has no room for, or that can no longer be
written, is dropped and counted. The count is said once: as a log line
(`log_lines_lost`) when the output takes lines again, or else on the host's
stderr at exit, if that is another file than stdout (under supervisord, with
`redirect_stderr`, it is not). The first loss is also said on that stderr then.

With JOBS_LOG_FILE the loop writes a file instead (`LogFile`), rotated by the host
itself and only between lines: supervisord rotates its files after any chunk it
read from a pipe, which cuts a line longer than the pipe holds in two.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from jobhost.descriptors import blind_in_children, forget
from jobhost.output import cut_record

LOG_BUFFER_BYTES = 8 * 1024 * 1024  # lines waiting for a slow reader of stdout, at most
CLOSE_WAIT = 2.0  # seconds the exit waits for waiting lines to be written
GATHER = 0.005  # seconds the writer lets lines gather once woken, to write them together
WRITE_BATCH = 256 * 1024  # bytes of waiting lines written at once, at most
RETRY_PAUSE = 0.5  # seconds between tries of a log file that cannot be written (a full disk)
LOG_FILE_MODE = 0o640  # the job user writes, its group (adm on a host) reads, nobody else
ROTATION_WAIT = 2.0  # seconds a writer waits for another's rotation of the same file


class Sink(Protocol):
    """Where a `BoundedOutput` writes."""

    name: str  # for messages: "stdout", or the file's path
    error: OSError | None  # the last write error; the output takes lines again after one

    def write(self, lines: list[bytes]) -> int:
        """Write `lines`, each whole; return how many were. Raise OSError when nothing can be
        written any more (a pipe whose reader is gone)."""
        ...


class Descriptor:
    """An inherited descriptor (stdout, stderr): an error writing it is final."""

    def __init__(self, fd: int, name: str = "stdout"):
        self.fd = fd
        self.name = name
        self.error: OSError | None = None

    def write(self, lines: list[bytes]) -> int:
        view = memoryview(b"".join(lines))
        while view:
            view = view[os.write(self.fd, view) :]
        return len(lines)


class LogFile:
    """A log file the host writes and rotates itself, only between lines.

    Before a write would take the file past `max_bytes` (0: never), `jobs.log.N` becomes
    `jobs.log.N+1` (the oldest past `backups` is deleted), `jobs.log` becomes `jobs.log.1`, and a
    new `jobs.log` is opened: supervisord's names, which a shipper that follows renames (rsyslog
    imfile) reads on. A line longer than `max_bytes` has a file of its own. Before each batch the
    path is looked at: a file removed or renamed by someone else (logrotate, a person) is
    reopened. A write that fails (a full disk, an I/O error) leaves no part of a line behind; the
    lines it did not write wait and are tried again.

    Several processes may write the same file (the loop and the keepers of runs it handed over):
    each batch is written under an flock() of the directory, after a look at the path, so that
    the size is each writer's to see whole and two writers never rotate the same file twice.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int):
        self.path = path
        self.name = str(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.error: OSError | None = None
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._size = 0
        self._open()  # at start: a file that cannot be opened is a refused start (the caller says so)

    def write(self, lines: list[bytes]) -> int:
        done = 0
        try:
            with self._writers_lock():
                self._follow_path()
                pending: list[bytes] = []
                for line in lines:
                    taken = self._size + sum(map(len, pending))
                    if self.max_bytes and taken and taken + len(line) > self.max_bytes:
                        done += self._write(pending)
                        pending = []
                        self._rotate()
                    pending.append(line)
                done += self._write(pending)
        except OSError as exc:
            self.error = exc
            self._close()  # reopened by the next try: the disk may be another one by then
            return done
        self.error = None
        return done

    def close(self) -> None:
        self._close()

    def _write(self, lines: list[bytes]) -> int:
        """Append `lines`; on a failure, cut the file back to where it was (no half line stays)."""
        if not lines:
            return 0
        assert self._fd is not None
        view = memoryview(b"".join(lines))
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += sum(map(len, lines))
        return len(lines)

    def _follow_path(self) -> None:
        """Open the file the path names now, if it is not the one open; learn its size."""
        try:
            here = os.stat(self.path)
            moved = (here.st_dev, here.st_ino) != self._identity
        except FileNotFoundError:
            moved = True
        if moved or self._fd is None:
            self._close()
            self._open()
        else:
            self._size = os.fstat(self._fd).st_size  # truncated by someone (copytruncate): where it is

    @contextlib.contextmanager
    def _writers_lock(self) -> Iterator[None]:
        """One batch at a time among every process writing this path, when it is rotated: its size
        is then looked at, and the file rotated, by one writer at a time. A writer stopped while it
        holds the lock is waited for ROTATION_WAIT at most; then the batch is written anyway."""
        try:
            fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if self.max_bytes else None
        except OSError:  # a directory this user may write but not read: written on without the lock
            fd = None
        if fd is None:
            yield
            return
        try:
            give_up = time.monotonic() + ROTATION_WAIT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= give_up:
                        break
                    time.sleep(0.002)
            yield
        finally:
            os.close(fd)  # and with it the lock

    def _rotate(self) -> None:
        """Rename the files one up and open a new one. A rename that fails leaves the file as it
        is, written on past its size (no line is lost for it); the next batch tries again."""
        self._close()
        with contextlib.suppress(OSError):
            self._shift()
        self._open()

    def _shift(self) -> None:
        """jobs.log.N → jobs.log.N+1 ... jobs.log → jobs.log.1; the oldest past `backups` goes."""
        if self.backups == 0:
            os.unlink(self.path)
            return
        for number in range(self.backups - 1, 0, -1):
            older = self._backup(number)
            if older.exists():
                os.replace(older, self._backup(number + 1))
        os.replace(self.path, self._backup(1))

    def _backup(self, number: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{number}")

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, LOG_FILE_MODE)
        except PermissionError:
            if not self.path.exists():
                raise
            # A file this user may not write (supervisord's, root's, from before the host wrote its own
            # log) in a directory it may: rotated away like a full one, not a reason to refuse to start.
            self._shift()
            fd = os.open(self.path, flags, LOG_FILE_MODE)
        info = os.fstat(fd)
        if stat.S_IMODE(info.st_mode) != LOG_FILE_MODE:
            with contextlib.suppress(OSError):
                os.fchmod(fd, LOG_FILE_MODE)
        blind_in_children(fd)  # a process the host forks never writes the log itself
        self._fd, self._identity, self._size = fd, (info.st_dev, info.st_ino), info.st_size

    def _close(self) -> None:
        if self._fd is not None:
            forget(self._fd)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class BoundedOutput:
    """A sink written by a daemon thread, from a queue of at most `limit` bytes.

    Once full, the queue takes lines again only when it has drained to half, so that
    a reader that keeps up only now and then gives a few long gaps, not many short ones.
    `say` hears when the sink starts failing and when it is written again (from the thread).
    """

    def __init__(self, sink: Sink, limit: int = LOG_BUFFER_BYTES, say: Callable[[str], None] | None = None):
        self.sink = sink
        self._say = say
        self.limit = limit
        self.error: OSError | None = None  # the write error that made the output unusable
        self._queue: deque[bytes] = deque()
        self._size = 0
        self._full = False
        self._lost = 0  # lines dropped and not reported yet
        self._changed = threading.Condition()
        threading.Thread(target=self._write_queued, name=f"log-output-{sink.name}", daemon=True).start()

    def put(self, data: bytes, notice: Callable[[int], bytes] | None = None) -> bool:
        """Queue `data` (one line); False if it was dropped (and counted). If lines were lost
        before it, `notice(count)` is queued first: the output takes lines again."""
        with self._changed:
            if self._full and self._size <= self.limit // 2:
                self._full = False
            if self.error is not None or self._full or self._size + len(data) > self.limit:
                self._full = self.error is None
                self._lost += 1
                return False
            if self._lost and notice is not None:
                self._append(notice(self._lost))
                self._lost = 0
            self._append(data)
            return True

    def abandon(self) -> int:
        """At exit: drop what is still queued; return every line not written and not reported."""
        with self._changed:
            lost, self._lost = self._lost + len(self._queue), 0
            self._queue.clear()
            self._size = 0
            return lost

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every queued line to be written (or dropped)."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._queue, timeout)

    def _write_queued(self) -> None:
        failing = False
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queue)
            time.sleep(GATHER)  # the lines logged meanwhile go out with these: one wakeup, one write
            with self._changed:
                batch = self._batch()
            try:
                written = self.sink.write(batch)
            except OSError as exc:  # EPIPE, or a closed descriptor: nothing will be written any more
                with self._changed:
                    self.error = exc
                    self._lost += len(self._queue)
                    self._queue.clear()
                    self._size = 0
                    self._changed.notify_all()
                return
            with self._changed:
                if self._queue and self._queue[0] is batch[0]:  # not abandoned meanwhile
                    for data in batch[:written]:
                        self._queue.popleft()
                        self._size -= len(data)
                self._changed.notify_all()
            if written < len(batch):  # a log file that cannot be written now: the rest waits
                if not failing and self._say is not None:
                    self._say(f"{_why(self.sink)}; its lines wait (up to {self.limit // 1024} KiB) and are tried again")
                failing = True
                time.sleep(RETRY_PAUSE)
            elif failing:
                failing = False
                if self._say is not None:
                    self._say(f"{self.sink.name} is written again")

    def _batch(self) -> list[bytes]:
        """The first lines waiting, up to WRITE_BATCH bytes (one line at least)."""
        batch: list[bytes] = []
        size = 0
        for data in self._queue:
            if batch and size + len(data) > WRITE_BATCH:
                break
            batch.append(data)
            size += len(data)
        return batch

    def _append(self, data: bytes) -> None:
        # The writer is woken when lines start waiting, not for each one: every wakeup hands it the
        # GIL, which the loop then waits for at its next store call.
        if not self._queue:
            self._changed.notify_all()
        self._queue.append(data)
        self._size += len(data)


class QueuedLogHandler(logging.Handler):
    """Formats each record in the thread that logs and hands the line to a `BoundedOutput`."""

    def __init__(self, sink: Sink, stderr_fd: int | None, limit: int = LOG_BUFFER_BYTES):
        super().__init__()
        self.errors = None if stderr_fd is None else BoundedOutput(Descriptor(stderr_fd, "stderr"), 64 * 1024)
        self.output = BoundedOutput(sink, limit, self._say)
        self._warned = False

    def emit(self, record: logging.LogRecord) -> None:
        for part in cut_record(record):  # a thread job's huge message, in pieces as a process job's
            try:
                line = self.format(part)
            except Exception:  # noqa: BLE001 - a record that cannot be formatted is said, not raised
                self._say(f"a log record could not be formatted: {str(record.msg)[:200]!r}")
                return
            notice = lambda lost: self._encode(self.format(_lost_record(lost, self.output.sink)))  # noqa: E731
            if not self.output.put(self._encode(line), notice) and not self._warned:
                self._warned = True
                self._say(
                    f"log lines to {self.output.sink.name} are being dropped ({_why(self.output.sink, self.output.error)}); they are counted"
                )

    def handleError(self, record: logging.LogRecord) -> None:
        """Never write to sys.stderr: in the host it is a pipe the loop itself reads."""
        self._say(f"a log record could not be written: {str(record.msg)[:200]!r}")

    def close(self) -> None:
        """At exit: let waiting lines out (bounded in time), then say what was lost on stderr."""
        self.output.drain(CLOSE_WAIT)
        lost = self.output.abandon()
        if lost:
            self._say(
                f"{lost} log lines could not be written to {self.output.sink.name} ({_why(self.output.sink, self.output.error)})"
            )
        if isinstance(self.output.sink, LogFile):
            self.output.sink.close()
        if self.errors is not None:
            self.errors.drain(CLOSE_WAIT)
        super().close()

    def _say(self, text: str) -> None:
        if self.errors is not None:
            self.errors.put(f"jobhost: {text}\n".encode("utf-8", "backslashreplace"))

    @staticmethod
    def _encode(line: str) -> bytes:
        return (line + "\n").encode("utf-8", "backslashreplace")


def _why(sink: Sink, final: OSError | None = None) -> str:
    """Why lines are not written: the final error of a descriptor, a file's last one, or a slow reader."""
    error = final or sink.error
    if error is not None:
        return f"{sink.name} cannot be written: {error.strerror or error}"
    return f"{sink.name} is not read" if isinstance(sink, Descriptor) else f"{sink.name} is not written fast enough"


def _lost_record(lost: int, sink: Sink) -> logging.LogRecord:
    reason = "stdout was not read" if isinstance(sink, Descriptor) else f"{sink.name} could not be written"
    return logging.makeLogRecord(
        {
            "name": "jobhost",
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": f"{lost} log lines were lost before this one: {reason}",
            "event": "log_lines_lost",
            "lost": lost,
        }
    )


def separate_stderr(stdout_fd: int, stderr_fd: int) -> bool:
    """True when the two descriptors lead to different files (not `2>&1` or supervisord's redirect)."""
    with contextlib.suppress(OSError):
        out, err = os.fstat(stdout_fd), os.fstat(stderr_fd)
        return (out.st_dev, out.st_ino) != (err.st_dev, err.st_ino)
    return False
