"""Take a secret out of the host's environment for good, so that the jobs it forks cannot read it.

Removing a variable from `os.environ` is not enough. Linux shows a process's
environment as it was at exec, the block of memory between `env_start` and
`env_end` of /proc/PID/stat, in /proc/PID/environ: to every process of the job
user, and to a forked job as its own /proc/self/environ. Python also keeps the
first copy it made, `posix.environ`. The value is overwritten in that block
(it is the process's own writable memory), and dropped from both copies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import posix
from pathlib import Path

_ENV_START_FIELD = 50  # of /proc/PID/stat, counted from 1 (proc(5))


def forget_variable(name: str) -> str | None:
    """Remove `name` from the environment everywhere this process keeps it; return its value."""
    value = os.environ.pop(name, None)
    posix.environ.pop(name.encode(), None)
    block = _initial_block()
    if block is not None:
        _erase(name.encode() + b"=", *block)
    return value


def _initial_block() -> tuple[int, int] | None:
    """The addresses where the exec-time environment lies, or None where Linux does not say."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start = int(fields[_ENV_START_FIELD - 3])  # the split starts at field 3
        end = int(fields[_ENV_START_FIELD - 2])
        return (start, end) if 0 < start < end else None
    return None


def _erase(prefix: bytes, start: int, end: int) -> None:
    """Overwrite each `NAME=value` entry of the block with NUL bytes."""
    offset = start
    while offset < end:
        entry = ctypes.string_at(offset)  # stops at the NUL after the entry
        if entry.startswith(prefix):
            ctypes.memset(offset, 0, len(entry))
        offset += len(entry) + 1
