"""How a run can end: its status, with every classification of it, and its outcome."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple


class RunStatus(StrEnum):
    """The status of one run in history (the values are part of the contract)."""

    RUNNING = "running"  #: started and not yet ended
    SUCCEEDED = "succeeded"  #: the function returned
    FAILED = "failed"  #: the function raised; reason has the exception type and message
    TIMED_OUT = "timed_out"  #: still going at its timeout; its process group was killed
    CRASHED = "crashed"  #: the run's process died without reporting (exit code or signal)
    SKIPPED = "skipped"  #: not started: the previous run of the job was still going
    MISSED = "missed"  #: its slot passed while it could not run (host down, catch-up policy)
    WAITING = "waiting"  #: held back until the jobs it comes `after` have succeeded
    INTERRUPTED = "interrupted"  #: stopped because the host was told to stop
    ABANDONED = "abandoned"  #: found running in history with no host left to finish it
    CANCELLED = "cancelled"  #: stopped (or kept from starting) by a person; reason says who

    @property
    def event(self) -> str:
        """The `event` field of the log line that announces this status."""
        return _KINDS[self].event

    @property
    def ended(self) -> bool:
        """The record is closed: nothing more happens to this attempt."""
        return self not in (RunStatus.RUNNING, RunStatus.WAITING)

    @property
    def settles(self) -> bool:
        """The slot has its outcome: catch-up starts after the newest such slot. A slot left
        interrupted, abandoned or paused is still owed a run."""
        return _KINDS[self].settles

    @property
    def retryable(self) -> bool:
        """Worth another attempt, if the job has some left. An interrupted or abandoned attempt
        is not retried but caught up at the next start (it does not settle the slot)."""
        return _KINDS[self].retryable

    @property
    def ends_run(self) -> bool:
        """The end of an attempt that started: its kept lines are handed on."""
        return _KINDS[self].ends_run

    @property
    def level(self) -> int:
        """The logging level of the line that announces it."""
        return _KINDS[self].level

    @property
    def failure(self) -> str | None:
        """How an error tracker words it ("timed out"), for the outcomes it reports; None otherwise."""
        return _KINDS[self].failure

    @property
    def check_in(self) -> str | None:
        """The status of a cron monitor's check-in for it, or None where it sends none."""
        return _KINDS[self].check_in

    @property
    def tone(self) -> str:
        """How it is drawn on a page: ok, busy, bad or warn."""
        return _KINDS[self].tone


class _Kind(NamedTuple):
    event: str
    settles: bool
    retryable: bool
    ends_run: bool
    level: int
    failure: str | None
    check_in: str | None
    tone: str


_I, _W, _E = logging.INFO, logging.WARNING, logging.ERROR
# One row a status, so that adding one means deciding each of its classifications here.
_KINDS = {  # event, settles, retryable, ends_run, level, failure, check_in, tone
    RunStatus.RUNNING: _Kind("run_started", False, False, False, _I, None, "in_progress", "busy"),
    RunStatus.SUCCEEDED: _Kind("run_succeeded", True, False, True, _I, None, "ok", "ok"),
    RunStatus.FAILED: _Kind("run_failed", True, True, True, _E, "failed", "error", "bad"),
    RunStatus.TIMED_OUT: _Kind("run_timed_out", True, True, True, _E, "timed out", "error", "bad"),
    RunStatus.CRASHED: _Kind("run_crashed", True, True, True, _E, "crashed", "error", "bad"),
    RunStatus.SKIPPED: _Kind("run_skipped", True, False, False, _W, None, None, "warn"),
    RunStatus.MISSED: _Kind("run_missed", True, False, False, _W, None, None, "warn"),
    RunStatus.WAITING: _Kind("run_waiting", False, False, False, _I, None, None, "busy"),
    RunStatus.INTERRUPTED: _Kind("run_interrupted", False, False, True, _W, None, "error", "warn"),
    RunStatus.ABANDONED: _Kind("run_abandoned", False, False, True, _E, "was abandoned", "error", "bad"),
    # A person's decision: it settles the slot (not caught up, not retried, a child is blocked), is
    # no failure to report, and its check-in is ok: the monitor pages no one for what someone chose.
    RunStatus.CANCELLED: _Kind("run_cancelled", True, False, True, _W, None, "ok", "warn"),
}
assert set(_KINDS) == set(RunStatus), "every status is classified"


@dataclass(frozen=True)
class Outcome:
    """How one run ended: a status, a reason a person can act on, and any traceback.

    `exception` is the job's exception as structured data (frames, locals) for an
    error tracker, made where the exception happened; None when no reporter asked.
    """

    status: RunStatus
    reason: str = ""
    traceback: str | None = None
    exception: dict[str, Any] | None = None
