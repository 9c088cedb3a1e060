"""Decode how a process ended into words a person can act on at 2 a.m."""

from __future__ import annotations

import os
import signal

_SIGNAL_HINTS = {
    signal.SIGKILL: "perhaps out of memory?",
    signal.SIGSEGV: "segmentation fault: a crash in native code",
    signal.SIGBUS: "bus error: a crash in native code",
    signal.SIGABRT: "aborted, often by a failed assertion in native code",
    signal.SIGFPE: "arithmetic error in native code",
}
# How a run's process says it could not do its part (a job's own exit code may be anything else).
HARNESS_FAILED = 70  # before the job was called
RETURNED_UNREPORTED = 71  # the job returned; its outcome could not be sent to the host
RAISED_UNREPORTED = 72  # the job raised; its exception could not be sent to the host
_UNREPORTED = "but its process could not report it to the host (had the job closed the descriptors it reports through?)"
UNREPORTED = {
    RETURNED_UNREPORTED: f"the job returned, {_UNREPORTED}",
    RAISED_UNREPORTED: f"the job raised, {_UNREPORTED}",
}


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_wait_status(status: int) -> str:
    """``killed by SIGKILL (perhaps out of memory?)``, ``exited with code 3`` ..."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        hint = _SIGNAL_HINTS.get(signum)  # type: ignore[call-overload]
        return f"killed by {signal_name(signum)}" + (f" ({hint})" if hint else "")
    code = os.waitstatus_to_exitcode(status)
    if code == HARNESS_FAILED:
        return f"exited with code {code}: the run could not be set up in its process"
    if code in UNREPORTED:
        return f"exited with code {code}: {UNREPORTED[code]}"
    return f"exited with code {code}"
