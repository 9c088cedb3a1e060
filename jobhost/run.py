"""What the loop needs of a run, however it is isolated (ProcessRun, ThreadRun).

The loop owns the timing: it tells a run which of its descriptors are readable
and calls `poll` with the monotonic time; a run never sleeps or blocks.
"""

from __future__ import annotations

from typing import Protocol

from jobhost.context import RunContext
from jobhost.definition.spec import JobSpec
from jobhost.outcomes import Outcome


class Run(Protocol):
    spec: JobSpec
    context: RunContext
    pid: int | None
    needs_polling: bool

    def start(self, now: float) -> None: ...
    def fds(self) -> list[int]: ...
    def next_deadline(self) -> float | None: ...
    def on_readable(self, fd: int, now: float) -> list[int]: ...
    def poll(self, now: float) -> list[int]: ...
    def stop(self, outcome: Outcome, now: float, *, at_once: bool = False) -> None: ...
    def outcome(self) -> Outcome: ...
    @property
    def done(self) -> bool: ...
