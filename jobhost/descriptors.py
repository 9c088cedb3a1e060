"""What a forked process keeps of the host's open descriptors: nothing it was not handed.

A run's process is a fork without exec, so close-on-exec does nothing for it, and
whatever it starts (a daemon in a session of its own, forked twice) inherits its
descriptors and outlives the run. Had the run kept the host's, that process would
hold the state file, its write-ahead log, the loop's lock, the database socket and
the HTTP listener for as long as it lives, and the next host would find them taken.

A host descriptor is not closed but pointed at /dev/null: an object of the host
that closes its number later in the child (a socket's or a connection's finalizer)
then closes /dev/null, never a file the job has opened under that number meanwhile.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection

_FD_DIR = "/proc/self/fd"
_blind_in_children: set[int] = set()
_hooked = False


def keep_only(keep: Collection[int]) -> None:
    """Point every descriptor of this process but `keep` at /dev/null (close-on-exec, so
    that a program the job runs does not inherit even those)."""
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        fds = [int(name) for name in os.listdir(_FD_DIR)]
    except OSError:  # no /proc: close them instead, above the highest number kept
        os.closerange(max((*keep, null)) + 1, os.sysconf("SC_OPEN_MAX"))
        fds = list(range(max((*keep, null)) + 1))
    for fd in fds:
        if fd not in keep and fd != null:
            with contextlib.suppress(OSError):  # not open: the one that listed the directory
                os.get_inheritable(fd)
                os.dup2(null, fd, inheritable=False)
    os.close(null)


def blind_in_children(fd: int) -> None:
    """Point `fd` at /dev/null in every process this one forks (an `os.fork`, by the
    engine or by a job of a thread): a lock held through it then belongs to this
    process alone, never to a child that outlives it."""
    global _hooked
    if not _hooked:
        os.register_at_fork(after_in_child=_blind)
        _hooked = True
    _blind_in_children.add(fd)


def forget(fd: int) -> None:
    """`fd` is about to be closed: its number may soon be another file's, left alone."""
    _blind_in_children.discard(fd)


def _blind() -> None:
    if not _blind_in_children:
        return
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    for fd in _blind_in_children:
        with contextlib.suppress(OSError):
            os.dup2(null, fd, inheritable=False)
    os.close(null)
    _blind_in_children.clear()  # this child's numbers are its own from now on
