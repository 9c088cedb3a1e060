"""Turn the bytes a run writes into log lines that cannot break a JSON stream.

Bytes are decoded as UTF-8 incrementally (a character split across reads is
kept whole); invalid bytes become ``\\xNN`` escapes; a line longer than
`max_chars` is cut into pieces of that size, so one huge line cannot hold the
whole stream or exceed what a log shipper accepts. A last line without a
newline is still emitted when the stream ends. A log record's message is cut
the same way (`cut_record`), before it is serialised: one huge record would
otherwise be held whole, several times over, by the host that writes it.
"""

from __future__ import annotations

import codecs
import io
import logging
import threading
from collections.abc import Callable, Iterator

MAX_LINE_CHARS = 32 * 1024
READ_SIZE = 65536  # bytes read from a pipe at a time
RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}  # not a job's `extra`
# What the engine puts on a record of a run: its context, and the fields of its own lines.
RUN_FIELDS = {"job", "run_id", "slot", "attempt", "host", "stream", "job_module", "message_part", "message_parts"}


class LineSplitter:
    """Feed it bytes; it returns complete lines (without the newline)."""

    def __init__(self, max_chars: int = MAX_LINE_CHARS):
        self.max_chars = max_chars
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")
        self._pending = ""

    def feed(self, data: bytes) -> list[str]:
        self._pending += self._decoder.decode(data)
        return self._take_lines()

    def held(self) -> tuple[str, bytes]:
        """What is held of a line not ended yet: its text and the bytes of a character cut in two
        (for another process to `resume` reading the same stream where this one stopped)."""
        return self._pending, self._decoder.getstate()[0]

    def resume(self, text: str, undecoded: bytes) -> None:
        """Go on from what another splitter of the same stream `held`."""
        self._pending = text
        self._decoder.setstate((undecoded, 0))

    def finish(self) -> list[str]:
        """Flush what is left when the stream has ended."""
        self._pending += self._decoder.decode(b"", final=True)
        lines = self._take_lines()
        if self._pending:
            lines.append(self._pending)
            self._pending = ""
        return lines

    def _take_lines(self) -> list[str]:
        lines: list[str] = []
        *complete, self._pending = self._pending.split("\n")
        for line in complete:
            lines.extend(self._cut(line.removesuffix("\r")))
        while len(self._pending) >= self.max_chars:
            lines.append(self._pending[: self.max_chars])
            self._pending = self._pending[self.max_chars :]
        return lines

    def _cut(self, line: str) -> list[str]:
        return cut(line, self.max_chars)


class LineWriter(io.TextIOBase):
    """A text stream whose lines become calls of `emit`: each complete line as it is written, the
    last one at `close`. What is printed where a log is expected (a job module being imported, a
    thread-isolated job) so turns into log lines, and the stream stays JSON. Safe from several
    threads; `emit` is called outside the lock, so it may write to this stream again."""

    def __init__(self, emit: Callable[[str], object], max_chars: int = MAX_LINE_CHARS):
        self._emit = emit
        self._splitter = LineSplitter(max_chars)
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            lines = self._splitter.feed(text.encode("utf-8", "backslashreplace"))
        for line in lines:
            self._emit(line)
        return len(text)

    def close(self) -> None:
        if not self.closed:
            with self._lock:
                lines = self._splitter.finish()
            for line in lines:
                self._emit(line)
        super().close()


def job_fields(record: logging.LogRecord) -> dict[str, str]:
    """The fields a job logged with `extra=` (``load_1m``, ``free_percent``), as text, for the lines
    a person reads (the text format, the run page); the engine's own records have none."""
    if record.name == "jobhost" or record.name.startswith("jobhost."):
        return {}
    return {key: str(value) for key, value in vars(record).items() if key not in RECORD_FIELDS | RUN_FIELDS}


def cut(text: str, max_chars: int = MAX_LINE_CHARS) -> list[str]:
    """`text` in consecutive pieces of at most `max_chars` characters."""
    if len(text) <= max_chars:
        return [text]
    return [text[i : i + max_chars] for i in range(0, len(text), max_chars)]


def shorten(text: str, max_chars: int = MAX_LINE_CHARS) -> str:
    """`text` with its middle left out if it is longer than `max_chars` (a traceback keeps its
    first frames and its last lines, the exception), marked where it was cut."""
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return f"{text[:half]}... [{len(text) - 2 * half} characters cut] ...{text[-half:]}"


def cut_record(record: logging.LogRecord, max_chars: int = MAX_LINE_CHARS) -> Iterator[logging.LogRecord]:
    """`record`, or for a message longer than `max_chars` one record a piece of it (made one at
    a time), each with `message_part` and `message_parts`; the exception goes with the last.
    A longer `extra` string is shortened."""
    for key, value in list(vars(record).items()):
        if key not in RECORD_FIELDS and isinstance(value, str) and len(value) > max_chars:
            setattr(record, key, shorten(value, max_chars))
    message = record.getMessage()
    if len(message) <= max_chars:
        yield record
        return
    count = -(-len(message) // max_chars)
    for index in range(count):
        part = logging.makeLogRecord(vars(record))
        part.msg, part.args = message[index * max_chars : (index + 1) * max_chars], None
        part.message_part, part.message_parts = index + 1, count
        if index + 1 < count:
            part.exc_info, part.exc_text, part.stack_info = None, None, None
        yield part
