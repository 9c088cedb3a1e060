"""One run in a thread of the host (``isolation="thread"``), for tiny, trusted jobs.

A thread cannot be killed: at its timeout the run is recorded as timed out and
the thread is left to finish on its own. Its `print()` output is routed to the
log with the run's context by `RoutedStdout`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import io
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TextIO

from jobhost.context import RunContext, current_run
from jobhost.definition.durations import format_duration
from jobhost.definition.parameters import run_arguments
from jobhost.definition.spec import JobSpec
from jobhost.observe.events import Lifecycle
from jobhost.outcomes import Outcome, RunStatus
from jobhost.output import LineWriter
from jobhost.runs.process import LineSink, RecordSink
from jobhost.runs.results import call_job, outcome_of


class ThreadRun:
    """A run in a daemon thread, with the same face to the loop as ProcessRun."""

    def __init__(
        self,
        spec: JobSpec,
        context: RunContext,
        on_line: LineSink,
        on_record: RecordSink,
        lifecycle: Lifecycle | None = None,
        data_dir: Path | None = None,
    ):
        self.spec = spec
        self.data_dir = data_dir  # JOBS_DATA_DIR, for a job that takes `data_dir`
        self.lifecycle = lifecycle or Lifecycle()
        self.context = context
        self.pid: int | None = os.getpid()
        self.deadline: float | None = None
        self._result: Outcome | None = None
        self._forced: Outcome | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._open = True

    cancelled = False  # a thread is never prepared ahead, so never cancelled before its instant
    prepared = False
    handed = False  # a thread lives in the host's process: it ends with it, never handed over

    def hand_over(self, now: float, running_for: float) -> bool:
        return False

    def start(self, now: float, release_at: float | None = None) -> None:
        """Start the job now: a thread has no process to wait for its instant in (`release_at` is None)."""
        assert release_at is None, "a thread run is never prepared ahead"
        if self.spec.timeout is not None:
            self.deadline = now + self.spec.timeout
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(self._main,), name=f"job:{self.spec.name}", daemon=True)
        thread.start()

    def held_fds(self) -> list[int]:
        return []

    def cancel(self) -> list[int]:
        return []

    def _main(self) -> None:
        current_run.set(self.context)
        try:
            with self.lifecycle.job_scope(self.context, forked=False):
                result = call_job(
                    lambda: self.spec.call(
                        self.context.slot,
                        self.data_dir,
                        run_arguments(self.spec.func, self.context.params) if self.context.params else None,
                    ),
                    detail=self.lifecycle.describe_exception,
                )
            self._result = outcome_of(result)
        finally:
            RoutedStdout.flush_run(self.context)
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
            os.close(self._wake_w)  # the thread owns the write end; the loop closes the read end

    def fds(self) -> list[int]:
        return [self._wake_r] if self._open else []

    def next_deadline(self) -> float | None:
        return self.deadline if self._forced is None else None

    needs_polling = False

    @property
    def done(self) -> bool:
        return self._forced is not None or (self._result is not None and not self._open)

    def on_readable(self, fd: int, now: float) -> list[int]:
        self._close()
        return [fd]

    def poll(self, now: float) -> list[int]:
        if self._forced is None and self._result is None and self.deadline is not None and now >= self.deadline:
            self.stop(
                Outcome(
                    RunStatus.TIMED_OUT,
                    f"still running after its {format_duration(self.spec.timeout or 0)} timeout",
                ),
                now,
            )
        if self._forced is not None and self._open:
            self._close()
            return [self._wake_r]
        return []

    def stop(self, outcome: Outcome, now: float, *, at_once: bool = False, signum: int = signal.SIGTERM) -> None:
        if self._result is None and self._forced is None:
            self._forced = Outcome(outcome.status, outcome.reason + " (a thread-isolated run cannot be killed)")

    def outcome(self) -> Outcome:
        return self._forced or self._result or Outcome(RunStatus.CRASHED, "the thread ended without a result")

    def _close(self) -> None:
        self._open = False


class RoutedStdout(io.TextIOBase):
    """sys.stdout/sys.stderr for a host with thread-isolated jobs.

    Text written inside a run becomes log lines with that run's context; text
    written outside any run goes to the original stream.
    """

    _writers: dict[tuple[str, str], LineWriter] = {}  # by run and stream
    _lock = threading.Lock()
    _sink: LineSink | None = None

    def __init__(self, original: TextIO, name: str):
        self.original = original
        self.name_ = name

    @classmethod
    def install(cls, sink: LineSink) -> None:
        cls._sink = sink
        if not isinstance(sys.stdout, RoutedStdout):
            sys.stdout = cls(sys.stdout, "stdout")
            sys.stderr = cls(sys.stderr, "stderr")

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        context, sink = current_run.get(), type(self)._sink
        if context is None or sink is None:
            return self.original.write(text)
        key = (context.run_id, self.name_)
        with self._lock:
            writer = self._writers.get(key)
            if writer is None:
                writer = self._writers[key] = LineWriter(functools.partial(sink, context, self.name_))
        return writer.write(text)

    def flush(self) -> None:
        self.original.flush()

    @classmethod
    def flush_run(cls, context: RunContext) -> None:
        for name in ("stdout", "stderr"):
            with cls._lock:
                writer = cls._writers.pop((context.run_id, name), None)
            if writer is not None:
                writer.close()
