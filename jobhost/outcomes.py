"""How a run can end, and the lifecycle event that announces it."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from jobhost.output import shorten


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

    @property
    def event(self) -> str:
        """The `event` field of the log line that announces this status."""
        return _EVENTS[self]

    @property
    def ended(self) -> bool:
        return self not in (RunStatus.RUNNING, RunStatus.WAITING)


_EVENTS = {
    RunStatus.RUNNING: "run_started",
    RunStatus.SUCCEEDED: "run_succeeded",
    RunStatus.FAILED: "run_failed",
    RunStatus.TIMED_OUT: "run_timed_out",
    RunStatus.CRASHED: "run_crashed",
    RunStatus.SKIPPED: "run_skipped",
    RunStatus.MISSED: "run_missed",
    RunStatus.WAITING: "run_waiting",
    RunStatus.INTERRUPTED: "run_interrupted",
    RunStatus.ABANDONED: "run_abandoned",
}


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


ExceptionDetail = Callable[[BaseException], "dict[str, Any] | None"]


def call_job(
    call: Callable[[], object],
    after: Callable[[], None] | None = None,
    detail: ExceptionDetail | None = None,
) -> dict[str, Any]:
    """Call a job and turn however it ends into plain data (it can cross a pipe or sit in a file).

    `after` runs as soon as the job has returned or raised, before the result is built;
    `detail` turns an exception into structured data for an error tracker.
    """
    try:
        try:
            call()
        finally:
            if after is not None:
                after()
        return {"ok": True}
    except SystemExit as exc:
        return {"ok": exc.code in (None, 0), "exc_type": "SystemExit", "exc_message": f"sys.exit({exc.code!r})"}
    except BaseException as exc:  # noqa: BLE001 - every failure of the job is reported, never raised
        result: dict[str, Any] = {
            "ok": False,
            "exc_type": _qualified(type(exc)),
            # Cut where they are made, as a job's log lines are: the host never holds a huge one whole.
            "exc_message": shorten(str(exc)),
            "traceback": shorten("".join(traceback.format_exception(exc))),
        }
        if detail is not None:
            try:
                result["exception"] = detail(exc)
            except Exception:  # noqa: BLE001 - the plain traceback above is still reported
                result["exception"] = None
        return result


def outcome_of(result: dict[str, Any]) -> Outcome:
    """The Outcome that a `call_job` result stands for."""
    if result.get("ok"):
        return Outcome(RunStatus.SUCCEEDED)
    return Outcome(
        RunStatus.FAILED,
        f"{result.get('exc_type')}: {result.get('exc_message')}",
        result.get("traceback"),
        result.get("exception"),
    )


def _qualified(kind: type) -> str:
    module = kind.__module__
    return kind.__qualname__ if module in ("builtins", "__main__") else f"{module}.{kind.__qualname__}"
