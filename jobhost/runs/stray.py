"""Output that reaches descriptors 1 and 2 outside any run's own pipes, turned into log lines.

A thread-isolated job's subprocess, or native code, writes straight to the
process's descriptors; the log stream must stay JSON all the same. The host
points descriptors 1 and 2 at a pipe and logs what comes through it (the log
handler writes through a descriptor of its own). A thread of its own reads the
pipe, not the loop: the loop's thread writes there too (a warning, a traceback
Python prints), and a reader that writes more than the pipe holds to itself
waits for ever.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
import threading

from jobhost.output import READ_SIZE, LineSplitter

logger = logging.getLogger("jobhost.host")


class StrayOutput:
    """Descriptors 1 and 2 redirected into a pipe whose read end (`fd`) a daemon thread reads."""

    def __init__(self) -> None:
        read_end, write_end = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
        os.set_blocking(read_end, False)
        self.fd = read_end
        self._lines = LineSplitter()
        self._reading = threading.Lock()
        threading.Thread(target=self._follow, name="stray-output", daemon=True).start()

    def read(self) -> None:
        """Log what is waiting in the pipe, without blocking."""
        with self._reading, contextlib.suppress(BlockingIOError):
            while data := os.read(self.fd, READ_SIZE):
                for line in self._lines.feed(data):
                    logger.warning(line, extra={"event": "stray_output", "stream": "host"})
                if len(data) < READ_SIZE:
                    break

    def _follow(self) -> None:
        waiting = select.poll()
        waiting.register(self.fd, select.POLLIN)
        while True:
            events = [event for _, event in waiting.poll()]
            self.read()
            if any(event & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for event in events):
                return  # every write end is closed, or the read end: nothing more will come (no busy loop)
