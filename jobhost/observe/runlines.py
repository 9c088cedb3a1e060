"""The log lines of recent runs, for the status page's run view: in memory while a run goes
(RunLines), and in the state store once it has ended (LineKeeper).

A logging handler on the root logger keeps every record that belongs to a run (the
lifecycle lines, the job's own records, its stdout and stderr) under its run_id. It is
bounded: a run keeps its last LINES_PER_RUN lines, and the oldest runs are forgotten
once all lines kept pass MAX_CHARS. When a run ends, its lines are handed to `on_end`:
the LineKeeper writes them to the state store from a thread of its own, so the page
shows them after a restart and on every host sharing the store. The loop only hands
the lines over (a queue put); a store out of reach costs lines for the page, never a
run. Every line is in the log file too, with the run_id.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobhost.context import RunContextFilter
from jobhost.errors import StoreError
from jobhost.outcomes import RunStatus
from jobhost.output import job_fields

if TYPE_CHECKING:
    from jobhost.store import StateStore

keeper_logger = logging.getLogger("jobhost.web")  # the keeper's lines are the status page's

LINES_PER_RUN = 500
# The lifecycle lines that end a run (an attempt, for run_retrying): its lines are handed on.
ENDING = frozenset({status.event for status in RunStatus if status.ends_run} | {"run_retrying"})
MAX_CHARS = 8_000_000  # about 16 MB of str at most, across every run kept
LINE_CHARS = 4000  # a longer message is cut here (the log file has it whole)
EVICTED_KEPT = 10_000  # runs remembered as pushed out, so a run still going says its first lines are gone

KEPT_LINES = 200  # the last lines of a run kept in the store
KEPT_CHARS = 256 * 1024  # and no more than this much JSON: older lines go first
QUEUE_MAX = 200  # runs waiting to be written (50 MB at most); beyond that, the newest are not kept (logged)
# Kept lines are pruned after KEPT_DAYS, a batch an hour, by the keeper; the host's prune of history
# (JOBS_HISTORY_DAYS) takes them too, with their runs. See LineKeeper.
KEPT_DAYS = 14
PRUNE_EVERY = 3600.0
PRUNE_BATCH = 1000


def _text(text: str) -> str:
    """Text that encodes: a lone surrogate (undecodable bytes a job logged) becomes U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def size_of(line: dict[str, Any]) -> int:
    """What a kept line counts against MAX_CHARS: its text, and about 100 for the rest."""
    fields = line.get("fields") or {}
    return len(line["message"]) + len(line["traceback"] or "") + sum(len(k) + len(v) for k, v in fields.items()) + 100


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
            "fields": {key: _text(value[:LINE_CHARS]) for key, value in job_fields(record).items()},
        }

    def lines(self, run_id: str) -> tuple[list[dict[str, Any]], int] | None:
        """The kept lines of a run, oldest first, and how many earlier ones were dropped; None if none kept."""
        with self._guard:
            kept = self._runs.get(run_id)
            return None if kept is None else (list(kept.lines), kept.dropped)


class LineKeeper:
    """Writes (run_id, job, lines, dropped) handed to `keep` with `store`, in order, in the background.

    Kept lines are pruned twice, and the two prunes delete the same rows (the store's run lines,
    by when they were kept): here, after KEPT_DAYS; and in the host's prune of history
    (`StateStore.prune`, after JOBS_HISTORY_DAYS), which takes a run's lines with the run, so that
    the page never shows the lines of a run history has forgotten. Together they make one rule:
    a run's lines stay KEPT_DAYS, or as long as the run if history is shorter. Both are needed:
    only a host serving HTTP has a keeper, and the prune of history still clears the lines of a
    store that no host serves the page of any longer (or is shared with hosts that do not).
    """

    def __init__(self, store: StateStore):
        self.store = store
        self._queue: queue.Queue[tuple[str, str, list[dict[str, Any]], int] | None] = queue.Queue(QUEUE_MAX)
        self._thread = threading.Thread(target=self._write_all, name="jobhost-run-lines", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def keep(self, run_id: str, job: str, lines: list[dict[str, Any]], dropped: int) -> None:
        """Called in the loop as a run ends: never blocks."""
        try:
            self._queue.put_nowait((run_id, job, *_bounded(lines, dropped)))
        except queue.Full:
            keeper_logger.warning(
                "the log lines of run %s are not kept for the status page: %d runs wait to be written",
                run_id,
                QUEUE_MAX,
                extra={"event": "run_lines_dropped", "dropped_run_id": run_id},
            )

    def stop(self, timeout: float) -> None:
        """Write what is waiting, for `timeout` seconds at most."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _write_all(self) -> None:
        next_prune = 0.0
        while (item := self._queue.get()) is not None:
            run_id, job, lines, dropped = item
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_EVERY
                self._prune()
            try:
                self.store.keep_lines(run_id, job, dt.datetime.now(dt.UTC), lines, dropped)
            except StoreError as exc:
                if not self._failing:  # once an outage: the page says where the lines are instead
                    keeper_logger.warning(
                        "the log lines of ended runs are not kept for the status page: %s",
                        exc,
                        extra={"event": "run_lines_unkept"},
                    )
                self._failing = True
            else:
                self._failing = False

    def _prune(self) -> None:
        before = dt.datetime.now(dt.UTC) - dt.timedelta(days=KEPT_DAYS)
        with contextlib.suppress(StoreError):  # tried again in an hour
            while self.store.prune_lines(before, PRUNE_BATCH) == PRUNE_BATCH:
                pass


def _bounded(lines: list[dict[str, Any]], dropped: int) -> tuple[list[dict[str, Any]], int]:
    """The last KEPT_LINES lines, fewer if they pass KEPT_CHARS; `dropped` grows by what is left out."""
    kept = lines[-KEPT_LINES:]
    size = sum(size_of(line) for line in kept)  # cheap: it runs in the loop as a run ends
    while len(kept) > 1 and size > KEPT_CHARS:
        size -= size_of(kept[0])
        kept = kept[1:]
    return kept, dropped + len(lines) - len(kept)
