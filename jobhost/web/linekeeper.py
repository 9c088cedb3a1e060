"""Keeps the log lines of each ended run in the state store, from a thread of its own, so the
status page shows them after a restart and on every host sharing the store. The loop only
hands the lines over (a queue put); a store out of reach costs lines for the page, never a run."""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
from typing import Any

from jobhost.errors import StoreError
from jobhost.store import StateStore

logger = logging.getLogger("jobhost.web")

KEPT_LINES = 200  # the last lines of a run kept in the store
KEPT_CHARS = 256 * 1024  # and no more than this much JSON: older lines go first
QUEUE_MAX = 10_000  # runs waiting to be written; beyond that, the newest are not kept (and it is logged)


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
            self._queue.put_nowait((run_id, job, lines, dropped))
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
        while (item := self._queue.get()) is not None:
            run_id, job, lines, dropped = item
            lines, dropped = _bounded(lines, dropped)
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


def _bounded(lines: list[dict[str, Any]], dropped: int) -> tuple[list[dict[str, Any]], int]:
    """The last KEPT_LINES lines, fewer if they pass KEPT_CHARS; `dropped` grows by what is left out."""
    kept = lines[-KEPT_LINES:]
    size = sum(len(json.dumps(line, ensure_ascii=False)) for line in kept)
    while len(kept) > 1 and size > KEPT_CHARS:
        size -= len(json.dumps(kept[0], ensure_ascii=False))
        kept = kept[1:]
    return kept, dropped + len(lines) - len(kept)
