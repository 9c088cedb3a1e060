"""Who holds a flock() lock on a file, as Linux tells it in /proc.

A flock() lock belongs to an open file, not to a process: a process forked while
holding it holds it too, and keeps it after the process that took it is gone. So
the pid that took the lock says little; what holds it now is read from the
descriptors of every process (`/proc/PID/fdinfo` shows the locks of each).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True)
class Holder:
    """A process with a descriptor that holds the lock, and the name it opened the file by."""

    pid: int
    command: str
    name: str


@dataclass(frozen=True)
class LockHolders:
    """The pid that took the lock (None if Linux does not say) and the processes that hold it now."""

    taker: int | None
    holders: tuple[Holder, ...]

    @property
    def taker_holds_it(self) -> bool:
        """The process that took the lock is alive and holds it still (not only what it forked)."""
        return any(holder.pid == self.taker for holder in self.holders)


def flock_holders(fd: int) -> LockHolders:
    """Who holds the flock() lock on the file open as `fd` (a lock this process failed to take)."""
    info = os.fstat(fd)
    target = (info.st_dev, info.st_ino)
    taker = None
    holders = []
    for entry in _PROC.iterdir() if _PROC.is_dir() else ():
        if not entry.name.isdigit():
            continue
        for number, name in _descriptors_of(entry, target):
            pid = _flock_taker(entry / "fdinfo" / number)
            if pid is not None:
                taker = pid
                holders.append(Holder(int(entry.name), _command(entry), name))
                break
    return LockHolders(taker if holders else _taker_in_proc_locks(info), tuple(holders))


def _descriptors_of(process: Path, target: tuple[int, int]) -> list[tuple[str, str]]:
    """(number, path it was opened by) of each descriptor of `process` open on the file `target`."""
    found = []
    with contextlib.suppress(OSError):  # gone meanwhile, or not ours to look at
        for link in (process / "fd").iterdir():
            with contextlib.suppress(OSError):
                info = link.stat()
                if (info.st_dev, info.st_ino) == target:
                    found.append((link.name, os.readlink(link)))
    return found


def _flock_taker(fdinfo: Path) -> int | None:
    """The pid that took the flock() lock held through this descriptor, if it holds one
    (a line such as ``lock:	1: FLOCK  ADVISORY  WRITE 4242 fe:00:2146538 0 EOF``)."""
    with contextlib.suppress(OSError):
        for line in fdinfo.read_text().splitlines():
            if line.startswith("lock:") and (pid := _flock_pid(line.split())) is not None:
                return pid
    return None


def _taker_in_proc_locks(info: os.stat_result) -> int | None:
    """The pid that took a flock() lock on the file, from /proc/locks (for a holder this user cannot see)."""
    file = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    with contextlib.suppress(OSError):
        for line in (_PROC / "locks").read_text().splitlines():
            fields = line.split()
            if file in fields and (pid := _flock_pid(fields)) is not None:
                return pid
    return None


def _flock_pid(fields: list[str]) -> int | None:
    """The pid of a flock() lock line of /proc (``FLOCK  ADVISORY  WRITE <pid> <file> 0 EOF``)."""
    if "FLOCK" not in fields:
        return None
    try:
        return int(fields[fields.index("FLOCK") + 3])
    except (IndexError, ValueError):
        return None


def _command(process: Path) -> str:
    """The process's command line, as `ps` shows it."""
    with contextlib.suppress(OSError):
        return (process / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    return "?"
