"""How a job's call ended, as plain data that can cross a pipe or sit in a file, and the
Outcome it stands for."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from jobhost.outcomes import Outcome, RunStatus
from jobhost.output import shorten

ExceptionDetail = Callable[[BaseException], "dict[str, Any] | None"]
ENGINE = str(Path(__file__).resolve().parents[1]) + "/"  # the jobhost package: the frames that called the job


def call_job(
    call: Callable[[], object],
    after: Callable[[], object] | None = None,
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
            "traceback": shorten("".join(traceback.format_exception(type(exc), exc, _from_the_job(exc)))),
        }
        if detail is not None:
            try:
                result["exception"] = detail(exc)
            except Exception:  # noqa: BLE001 - the plain traceback above is still reported
                result["exception"] = None
        return result


def _from_the_job(exc: BaseException) -> TracebackType | None:
    """The exception's traceback without the engine's frames that called the job (a person reads
    the job's own frames first); whole if every frame is the engine's (the call itself failed)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(ENGINE):
        tb = tb.tb_next
    return tb if tb is not None else exc.__traceback__


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
