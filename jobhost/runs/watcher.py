"""The loop's one place to wait: runs' pipes and pidfds, and signals.

Signal handlers only append the signal to `signals` (or set the nudge flag); the
wake-up pipe makes the wait return at once. Descriptors a run is done with are taken out of the
selector *before* they are closed: closed first, a descriptor still shared with
a child would stay in epoll and be reported for ever.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal

from jobhost.hoststatus import NUDGE_SIGNAL
from jobhost.runs.stray import StrayOutput


class Watcher:
    """Waits on every descriptor of the loop and says which run's became readable."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._owner: dict[int, str] = {}
        self.signals: list[int] = []
        # Set by a nudge, cleared by the look that follows. A plain flag, as a signal handler may set
        # it: a request is in the store before its nudge, so a look that clears a nudge sees it.
        self._nudged = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self.stray: StrayOutput | None = None

    def install_signals(self, signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)) -> None:
        """The signals that stop the host. SIGHUP is one: a terminal closing sends it (supervisord
        never does), and the person expects the host to end, cleanly, not to die mid-run. And
        NUDGE_SIGNAL, which only wakes the loop to look at the store's requests (a cancel)."""
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in signums:
            signal.signal(signum, lambda signum, frame: self.signals.append(signum))
        signal.signal(NUDGE_SIGNAL, lambda signum, frame: self._nudge())

    def wake(self) -> None:
        """Make the wait return at once (from another thread)."""
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
            os.write(self._wake_w, b"\0")

    def nudge(self) -> None:
        """Wake the wait and have the loop look at the store's requests (from any thread)."""
        self._nudge()
        self.wake()

    def _nudge(self) -> None:
        self._nudged = True

    def take_nudge(self) -> bool:
        """Whether a nudge came since the last look (and forget it)."""
        if not self._nudged:
            return False
        self._nudged = False
        return True

    def capture_stray_output(self) -> None:
        if self.stray is None:
            self.stray = StrayOutput()

    def watch(self, run_id: str, fds: list[int]) -> None:
        for fd in fds:
            self._owner[fd] = run_id
            self._selector.register(fd, selectors.EVENT_READ)

    def release(self, fds: list[int]) -> None:
        """Stop watching and close descriptors a run is done with: unregister first, then close."""
        for fd in fds:
            if self._owner.pop(fd, None) is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

    def wait(self, timeout: float) -> list[tuple[str, int]]:
        """Wait up to `timeout` seconds; return (run_id, fd) for each run descriptor that is readable."""
        ready = []
        for key, _ in self._selector.select(timeout):
            if key.fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 4096):
                        pass
            elif key.fd in self._owner:
                ready.append((self._owner[key.fd], key.fd))
        return ready

    def finish(self) -> None:
        """Log what stray output is still waiting."""
        if self.stray is not None:
            self.stray.read()
