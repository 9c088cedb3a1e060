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
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable

from jobhost.output import cut_record

LOG_BUFFER_BYTES = 8 * 1024 * 1024  # lines waiting for a slow reader of stdout, at most
CLOSE_WAIT = 2.0  # seconds the exit waits for waiting lines to be written
GATHER = 0.005  # seconds the writer lets lines gather once woken, to write them together
WRITE_BATCH = 256 * 1024  # bytes of waiting lines written at once, at most


class BoundedOutput:
    """A descriptor written by a daemon thread, from a queue of at most `limit` bytes.

    Once full, the queue takes lines again only when it has drained to half, so that
    a reader that keeps up only now and then gives a few long gaps, not many short ones.
    """

    def __init__(self, fd: int, limit: int = LOG_BUFFER_BYTES):
        self.fd = fd
        self.limit = limit
        self.error: OSError | None = None  # the write error that made the output unusable
        self._queue: deque[bytes] = deque()
        self._size = 0
        self._full = False
        self._lost = 0  # lines dropped and not reported yet
        self._changed = threading.Condition()
        threading.Thread(target=self._write_queued, name=f"log-output-{fd}", daemon=True).start()

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
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queue)
            time.sleep(GATHER)  # the lines logged meanwhile go out with these: one wakeup, one write
            with self._changed:
                batch = self._batch()
            try:
                view = memoryview(b"".join(batch))
                while view:
                    view = view[os.write(self.fd, view) :]
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
                    for data in batch:
                        self._queue.popleft()
                        self._size -= len(data)
                self._changed.notify_all()

    def _batch(self) -> list[bytes]:
        """The first lines waiting, up to WRITE_BATCH bytes (one line at least)."""
        batch, size = [], 0
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

    def __init__(self, stdout_fd: int, stderr_fd: int | None, limit: int = LOG_BUFFER_BYTES):
        super().__init__()
        self.output = BoundedOutput(stdout_fd, limit)
        self.errors = None if stderr_fd is None else BoundedOutput(stderr_fd, 64 * 1024)
        self._warned = False

    def emit(self, record: logging.LogRecord) -> None:
        for part in cut_record(record):  # a thread job's huge message, in pieces as a process job's
            try:
                line = self.format(part)
            except Exception:  # noqa: BLE001 - a record that cannot be formatted is said, not raised
                self._say(f"a log record could not be formatted: {str(record.msg)[:200]!r}")
                return
            notice = lambda lost: self._encode(self.format(_lost_record(lost)))  # noqa: E731
            if not self.output.put(self._encode(line), notice) and not self._warned:
                self._warned = True
                self._say(f"log lines to stdout are being dropped ({_why(self.output.error)}); they are counted")

    def handleError(self, record: logging.LogRecord) -> None:
        """Never write to sys.stderr: in the host it is a pipe the loop itself reads."""
        self._say(f"a log record could not be written: {str(record.msg)[:200]!r}")

    def close(self) -> None:
        """At exit: let waiting lines out (bounded in time), then say what was lost on stderr."""
        self.output.drain(CLOSE_WAIT)
        lost = self.output.abandon()
        if lost:
            self._say(f"{lost} log lines could not be written to stdout ({_why(self.output.error)})")
        if self.errors is not None:
            self.errors.drain(CLOSE_WAIT)
        super().close()

    def _say(self, text: str) -> None:
        if self.errors is not None:
            self.errors.put(f"jobhost: {text}\n".encode("utf-8", "backslashreplace"))

    @staticmethod
    def _encode(line: str) -> bytes:
        return (line + "\n").encode("utf-8", "backslashreplace")


def _why(error: OSError | None) -> str:
    return "stdout is not read" if error is None else f"stdout cannot be written: {error.strerror or error}"


def _lost_record(lost: int) -> logging.LogRecord:
    return logging.makeLogRecord(
        {
            "name": "jobhost",
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": f"{lost} log lines were lost before this one: stdout was not read",
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
