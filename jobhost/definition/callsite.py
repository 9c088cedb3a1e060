"""Where `@job(...)` was called from, cheaply also in a module that defines thousands of jobs.

A frame's `f_lineno` decodes its code's line table from the start up to the instruction, so
asking it once per decorator of one module-level code object costs time that grows with the
square of the jobs (3 of a 10,000-job module's 3.7 s start). Here the table of the code
object the calls come from is decoded once and looked up by bisection. Only the last one is
kept (weakly): the decorators of a module come one after another.
"""

from __future__ import annotations

import bisect
import sys
import weakref
from types import CodeType

from jobhost.errors import display_path


class _Lines:
    """One code object's line table, decoded: instruction offsets and their lines."""

    def __init__(self, code: CodeType):
        self.code = weakref.ref(code)
        self.file = display_path(code.co_filename)
        self.starts: list[int] = []
        self.lines: list[int | None] = []
        for start, _end, line in code.co_lines():
            self.starts.append(start)
            self.lines.append(line)

    def at(self, offset: int) -> int | None:
        index = bisect.bisect_right(self.starts, offset) - 1
        return self.lines[index] if index >= 0 else None


_last: _Lines | None = None


def call_site(depth: int = 1) -> tuple[str, int]:
    """The file (as a person at the repository would write it) and the line of the call
    `depth` frames above the caller of this function."""
    global _last
    frame = sys._getframe(depth + 1)
    code = frame.f_code
    if _last is None or _last.code() is not code:
        _last = _Lines(code)
    line = _last.at(frame.f_lasti)
    return _last.file, line if line is not None else (frame.f_lineno or code.co_firstlineno)
