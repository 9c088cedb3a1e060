"""The log lines of recent runs, kept in memory for the status page's run view.

A logging handler on the root logger keeps every record that belongs to a run (the
lifecycle lines, the job's own records, its stdout and stderr) under its run_id. It is
bounded: a run keeps its last LINES_PER_RUN lines, and the oldest runs are forgotten
once all lines kept pass MAX_CHARS. What it no longer has is in the log file, where
every line carries the run_id.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from jobhost.context import RunContextFilter

LINES_PER_RUN = 500
MAX_CHARS = 8_000_000  # about 16 MB of str at most, across every run kept
LINE_CHARS = 4000  # a longer message is cut here (the log file has it whole)


@dataclass
class _Lines:
    lines: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LINES_PER_RUN))
    dropped: int = 0  # earlier lines no longer kept
    chars: int = 0


class RunLines(logging.Handler):
    """Keeps the recent log lines of runs by run_id; read from another thread with `lines`."""

    def __init__(self, max_chars: int = MAX_CHARS) -> None:
        super().__init__(logging.DEBUG)
        self.max_chars = max_chars
        self._runs: OrderedDict[str, _Lines] = OrderedDict()
        self._chars = 0
        self._guard = threading.Lock()
        self.addFilter(RunContextFilter())  # a thread-isolated run's records get its run_id here

    def emit(self, record: logging.LogRecord) -> None:
        run_id = getattr(record, "run_id", None)
        if not isinstance(run_id, str):
            return
        message = record.getMessage()
        trace = getattr(record, "run_traceback", None) or record.exc_text
        line = {
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": message[:LINE_CHARS],
            "stream": getattr(record, "stream", None),
            "event": getattr(record, "event", None),
            "traceback": trace[: LINE_CHARS * 4] if isinstance(trace, str) else None,
        }
        size = len(line["message"]) + len(line["traceback"] or "") + 100
        with self._guard:
            kept = self._runs.get(run_id)
            if kept is None:
                kept = self._runs[run_id] = _Lines()
            if len(kept.lines) == kept.lines.maxlen:
                kept.dropped += 1
                gone = kept.lines[0]
                freed = len(gone["message"]) + len(gone["traceback"] or "") + 100
                kept.chars -= freed
                self._chars -= freed
            kept.lines.append(line)
            kept.chars += size
            self._chars += size
            while self._chars > self.max_chars and len(self._runs) > 1:
                _, oldest = self._runs.popitem(last=False)
                self._chars -= oldest.chars

    def lines(self, run_id: str) -> tuple[list[dict[str, Any]], int] | None:
        """The kept lines of a run, oldest first, and how many earlier ones were dropped; None if none kept."""
        with self._guard:
            kept = self._runs.get(run_id)
            return None if kept is None else (list(kept.lines), kept.dropped)
