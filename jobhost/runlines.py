"""The log lines of recent runs, kept in memory for the status page's run view.

A logging handler on the root logger keeps every record that belongs to a run (the
lifecycle lines, the job's own records, its stdout and stderr) under its run_id. It is
bounded: a run keeps its last LINES_PER_RUN lines, and the oldest runs are forgotten
once all lines kept pass MAX_CHARS. When a run ends, its lines are handed to `on_end`
(the status page keeps them in the state store). Every line is in the log file too,
with the run_id.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobhost.context import RunContextFilter
from jobhost.outcomes import RunStatus

LINES_PER_RUN = 500
# The lifecycle lines that end a run (an attempt, for run_retrying): its lines are handed on.
ENDING = frozenset({status.event for status in RunStatus if status.ends_run} | {"run_retrying"})
MAX_CHARS = 8_000_000  # about 16 MB of str at most, across every run kept
LINE_CHARS = 4000  # a longer message is cut here (the log file has it whole)
EVICTED_KEPT = 10_000  # runs remembered as pushed out, so a run still going says its first lines are gone


def _text(text: str) -> str:
    """Text that encodes: a lone surrogate (undecodable bytes a job logged) becomes U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def size_of(line: dict[str, Any]) -> int:
    """What a kept line counts against MAX_CHARS: its text, and about 100 for the rest."""
    return len(line["message"]) + len(line["traceback"] or "") + 100


@dataclass
class _Lines:
    lines: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LINES_PER_RUN))
    dropped: int = 0  # earlier lines no longer kept
    chars: int = 0


class RunLines(logging.Handler):
    """Keeps the recent log lines of runs by run_id; read from another thread with `lines`."""

    def __init__(
        self, max_chars: int = MAX_CHARS, on_end: Callable[[str, str, list[dict[str, Any]], int], None] | None = None
    ) -> None:
        super().__init__(logging.DEBUG)
        self.max_chars = max_chars
        self.on_end = on_end  # told (run_id, job, lines, dropped) when a run ends, outside the lock
        self._runs: OrderedDict[str, _Lines] = OrderedDict()
        self._chars = 0
        self._evicted: OrderedDict[str, None] = OrderedDict()  # runs pushed out, lately
        self._guard = threading.Lock()
        self.addFilter(RunContextFilter())  # a thread-isolated run's records get its run_id here

    def emit(self, record: logging.LogRecord) -> None:
        run_id = getattr(record, "run_id", None)
        if not isinstance(run_id, str):
            return
        try:
            line = self._line(record)
        except Exception:  # noqa: BLE001 - a bad log call (wrong arguments) is reported as logging does, not raised
            self.handleError(record)
            return
        size = size_of(line)
        with self._guard:
            kept = self._runs.get(run_id)
            if kept is None:
                # A run pushed out while still going has lost its first lines: say so, not "all here".
                kept = self._runs[run_id] = _Lines(dropped=1 if run_id in self._evicted else 0)
            if len(kept.lines) == kept.lines.maxlen:
                kept.dropped += 1
                freed = size_of(kept.lines[0])
                kept.chars -= freed
                self._chars -= freed
            kept.lines.append(line)
            kept.chars += size
            self._chars += size
            while self._chars > self.max_chars and len(self._runs) > 1:
                gone, oldest = self._runs.popitem(last=False)
                self._chars -= oldest.chars
                self._evicted[gone] = None
                if len(self._evicted) > EVICTED_KEPT:
                    self._evicted.popitem(last=False)
            ended = (list(kept.lines), kept.dropped) if line["event"] in ENDING and self.on_end else None
        if ended is not None and self.on_end is not None:
            self.on_end(run_id, str(getattr(record, "job", "")), *ended)

    @staticmethod
    def _line(record: logging.LogRecord) -> dict[str, Any]:
        trace = getattr(record, "run_traceback", None) or record.exc_text
        return {
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": _text(record.getMessage()[:LINE_CHARS]),
            "stream": getattr(record, "stream", None),
            "event": getattr(record, "event", None),
            "traceback": _text(trace[: LINE_CHARS * 4]) if isinstance(trace, str) else None,
        }

    def lines(self, run_id: str) -> tuple[list[dict[str, Any]], int] | None:
        """The kept lines of a run, oldest first, and how many earlier ones were dropped; None if none kept."""
        with self._guard:
            kept = self._runs.get(run_id)
            return None if kept is None else (list(kept.lines), kept.dropped)
