"""Keeps the log lines of each ended run in the state store, from a thread of its own, so the
status page shows them after a restart and on every host sharing the store. The loop only
hands the lines over (a queue put); a store out of reach costs lines for the page, never a run."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import threading
import time
from typing import Any

from jobhost.errors import StoreError
from jobhost.runlines import size_of
from jobhost.store import StateStore

logger = logging.getLogger("jobhost.web")

KEPT_LINES = 200  # the last lines of a run kept in the store
KEPT_CHARS = 256 * 1024  # and no more than this much JSON: older lines go first
QUEUE_MAX = 200  # runs waiting to be written (50 MB at most); beyond that, the newest are not kept (logged)
KEPT_DAYS = 14  # lines older than this are pruned, a batch an hour (history itself stays JOBS_HISTORY_DAYS)
PRUNE_EVERY = 3600.0
PRUNE_BATCH = 1000


class LineKeeper:
    """Writes (run_id, job, lines, dropped) handed to `keep` with `store`, in order, in the background."""

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
            logger.warning(
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
                    logger.warning(
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
