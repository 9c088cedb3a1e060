"""What the loop needs of a run, however it is isolated (ProcessRun, ThreadRun).

The loop owns the timing: it tells a run which of its descriptors are readable
and calls `poll` with the monotonic time; a run never sleeps or blocks. A run may be
prepared ahead of its slot (`start(release_at=...)`: only a process can wait for its
instant) and cancelled before it; the loop never asks which kind of run it has.
"""

from __future__ import annotations

import signal
from typing import Protocol

from jobhost.context import RunContext
from jobhost.definition.spec import JobSpec
from jobhost.outcomes import Outcome


class Run(Protocol):
    spec: JobSpec
    context: RunContext
    pid: int | None

    cancelled: bool  # a prepared run the stop kept from starting: its job was never called

    def start(self, now: float, release_at: float | None = None) -> None: ...
    def fds(self) -> list[int]: ...
    def held_fds(self) -> list[int]: ...
    def cancel(self) -> list[int]: ...
    @property
    def prepared(self) -> bool: ...
    @property
    def needs_polling(self) -> bool: ...
    def next_deadline(self) -> float | None: ...
    def on_readable(self, fd: int, now: float) -> list[int]: ...
    def poll(self, now: float) -> list[int]: ...
    def stop(self, outcome: Outcome, now: float, *, at_once: bool = False, signum: int = signal.SIGTERM) -> None: ...
    def outcome(self) -> Outcome: ...
    @property
    def done(self) -> bool: ...
