"""What happens inside the forked child that executes one run.

The child gets its own process group (so the host can kill the run and
everything it started at once), sends its stdout and stderr through pipes and
its log records and its result through a control pipe, as JSON lines. The host
is the only writer of the log stream, so nothing a job writes can break it.
The child always leaves through ``os._exit``: no atexit handlers or buffers
inherited from the host may run twice.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import json
import logging
import mmap
import os
import select
import signal
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

from jobhost.context import RunContext, current_run
from jobhost.definition.parameters import run_arguments
from jobhost.definition.spec import JobSpec
from jobhost.descriptors import keep_only
from jobhost.observe.events import Lifecycle
from jobhost.output import MAX_LINE_CHARS, RECORD_FIELDS, cut_record, shorten
from jobhost.runs.exits import HARNESS_FAILED, RAISED_UNREPORTED, RETURNED_UNREPORTED
from jobhost.runs.results import call_job

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_PR_SET_TIMERSLACK = 29
_FINAL_SLEEP = 0.002  # seconds before a release instant spent in a plain sleep
_SPIN = 0.0005  # seconds before it spent awake, reading the clock
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT}


def _load_prctl() -> Any:
    """libc's prctl, looked up once in the host: a run's process then calls it without loading
    anything (each page it touches after the fork is a page copied)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux with a C library ctypes can open
        return None


_prctl = _load_prctl()


class Terminated(BaseException):
    """Raised in the job when the host stops the run (timeout or host stop).

    A BaseException, so that a job's ``except Exception`` does not swallow it.
    """


def run_child(
    spec: JobSpec,
    context: RunContext,
    host_pid: int,
    fds: tuple[int, int, int],
    result_file: Path | None,
    lifecycle: Lifecycle,
    release: Release | None = None,
    data_dir: Path | None = None,
    *,
    own_group: bool = True,
) -> NoReturn:
    """Execute the job in this (forked) process and exit; never returns, whatever happens.

    `fds` are the write ends for stdout, stderr and the control messages. With a
    `result_file`, the outcome is also written there before the process exits, so
    a host killed between reaping the run and recording it can still record it.
    The `lifecycle`'s reporters wrap the call (an error tracker's scope, for one).
    With a `release`, the child is made ready before its slot and calls the job at
    the release instant, unless the host cancels it first. Without `own_group`, the child
    stays in its parent's process group: a keeper's (`host_pid` is then the keeper's).
    """
    code = HARNESS_FAILED
    try:
        keep = () if release is None else (release.fd,)
        control = _prepare(*fds, context, host_pid, spec.name, keep=keep, own_group=own_group)
        with lifecycle.job_scope(context, forked=True):
            if release is not None and not release.wait():
                control.send({"t": "not_released"})
                code = 0
            else:
                code = _execute(spec, context, control, result_file, lifecycle, data_dir)
        _flush()
    finally:
        os._exit(code)  # never unwind into the host's stack, whatever was raised


class Release:
    """When a prepared child calls its job: at a `time.monotonic()` instant, unless the
    host closes the other end of `fd` first (a stop, or the host's death).

    The child says when it was released by writing the wall-clock time into `started`,
    memory shared with the host: a message through a pipe would wake the host, which
    then takes the CPU from the job's first statements.
    """

    def __init__(self, at: float, fd: int, started: mmap.mmap):
        self.at = at
        self.fd = fd
        self.started = started

    def wait(self) -> bool:
        """Block until the instant (True) or until the host cancels (False)."""
        # A forked process copies each memory page it first writes to; going through the
        # code that follows the release once now keeps that work off the instant.
        call_job(lambda: None)
        # Linux lets a wait end late to group wakeups: 50 µs by default, and for poll()
        # a thousandth of the timeout on top. So: poll() until 2 ms before the instant,
        # then a plain sleep with the slack at 1 ns. The job keeps that slack (harmless).
        _set_timer_slack(1)
        cancel = select.poll()  # not select(): a host with many descriptors may hand out one above 1023
        cancel.register(self.fd, select.POLLIN)
        while (left := self.at - time.monotonic()) > _FINAL_SLEEP:
            if cancel.poll(max(1, int((left - _FINAL_SLEEP) * 1000))):
                os.close(self.fd)
                return False
        if left > _SPIN:
            time.sleep(left - _SPIN)
        while time.monotonic() < self.at:  # waking takes this machine 0.1-0.3 ms: be awake already
            pass
        struct.pack_into("d", self.started, 0, time.time())
        os.close(self.fd)
        return True


def started_at(started: mmap.mmap) -> float | None:
    """When a prepared child was released (wall-clock seconds), or None if it has not been."""
    at = struct.unpack_from("d", started, 0)[0]
    return at or None


def _execute(
    spec: JobSpec,
    context: RunContext,
    control: _Control,
    result_file: Path | None,
    lifecycle: Lifecycle,
    data_dir: Path | None,
) -> int:
    """Call the job and report its result; return the exit code."""
    # A second stop signal must not interrupt the report of the first.
    outcome = call_job(
        lambda: spec.call(context.slot, data_dir, run_arguments(spec.func, context.params) if context.params else None),
        after=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS),
        detail=lifecycle.describe_exception,
    )
    if result_file is not None:
        with contextlib.suppress(OSError):
            write_result(result_file, outcome)
    try:
        control.send({"t": "result", **outcome})
    except OSError:  # the job closed the pipe (and the host reads the file, if there is one)
        return RETURNED_UNREPORTED if outcome["ok"] else RAISED_UNREPORTED
    return 0 if outcome["ok"] else 1


def _prepare(
    out_fd: int,
    err_fd: int,
    ctl_fd: int,
    context: RunContext,
    host_pid: int,
    name: str,
    keep: tuple[int, ...],
    own_group: bool,
) -> _Control:
    if own_group:
        os.setpgid(0, 0)
    signal.set_wakeup_fd(-1)
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _terminate)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # the host's nudge is not the job's
    _die_with_parent()
    set_process_name(f"job:{name}")
    if os.getppid() != host_pid:  # the host died before the line above took effect
        os._exit(HARNESS_FAILED)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    for fd in {null, out_fd, err_fd}:
        if fd > 2:
            os.close(fd)
    keep_only({0, 1, 2, ctl_fd, *keep})  # nothing of the host reaches the job, nor what it leaves behind
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - lives as long as the process
    sys.stdout = _text_stream(1)
    sys.stderr = _text_stream(2)
    control = _Control(ctl_fd)
    root = logging.getLogger()
    root.handlers = [_ControlHandler(control)]
    current_run.set(context)
    return control


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(f"stopped by the host ({signal.Signals(signum).name})")


def write_result(path: Path, outcome: dict[str, Any]) -> None:
    """Write the outcome atomically (a reader sees all of it or nothing). Plain system calls, no
    pathlib or text layers: this runs in the run's process, where each page touched is copied."""
    final = os.fspath(path)
    partial = final + ".partial"
    data = json.dumps(outcome, default=repr).encode("utf-8", "backslashreplace")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)
    os.replace(partial, final)


def read_result(path: Path) -> dict[str, Any] | None:
    """The outcome a run's process left in `path`, if it got that far."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def set_process_name(name: str) -> None:
    """Name the process (as `ps -o comm`, `top` and `pgrep` show it) so runs stand apart from the host."""
    if _prctl is not None:
        _prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def _set_timer_slack(nanoseconds: int) -> None:
    """How late Linux may wake this process from a timed wait (it groups wakeups to save power)."""
    if _prctl is not None:
        _prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(nanoseconds), 0, 0, 0)


def _die_with_parent() -> None:
    """Ask Linux to kill this process if the host dies, so no run outlives it unseen."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _text_stream(fd: int) -> io.TextIOWrapper:
    raw = open(fd, "wb", buffering=0, closefd=False)  # noqa: SIM115 - lives as long as the process
    return io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", line_buffering=True, write_through=True)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


class _Control:
    """Newline-delimited JSON messages to the host over a pipe."""

    def __init__(self, fd: int):
        self.fd = fd
        self._pipe = _identity(fd)

    def send(self, message: dict[str, Any]) -> None:
        """Raises OSError if the pipe is gone, also when the job closed it and its number is now a
        file of the job's (which must not get the host's messages)."""
        if _identity(self.fd) != self._pipe:
            raise OSError(errno.EBADF, "the pipe to the host was closed by the job")
        _write_all(self.fd, (json.dumps(message, default=repr) + "\n").encode("utf-8", "backslashreplace"))


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd`, however many writes it takes (a pipe takes part at a time)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


class _ControlHandler(logging.Handler):
    """Sends each log record of the job to the host, which logs it with the run's context."""

    def __init__(self, control: _Control):
        super().__init__()
        self.control = control

    def emit(self, record: logging.LogRecord) -> None:
        try:
            for part in cut_record(record):  # a huge message in pieces, as printed output
                message: dict[str, Any] = {
                    "t": "log",
                    "name": part.name,
                    "levelno": part.levelno,
                    "msg": part.getMessage(),
                    "created": part.created,
                    "extra": {k: _plain(v) for k, v in vars(part).items() if k not in RECORD_FIELDS},
                }
                if part.exc_info:
                    message["traceback"] = shorten("".join(traceback.format_exception(*part.exc_info)))
                self.control.send(message)
        except Exception:  # noqa: BLE001 - logging must never break the job
            self.handleError(record)


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return shorten(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return shorten(repr(value))
    return value if len(text) <= MAX_LINE_CHARS else shorten(text)
