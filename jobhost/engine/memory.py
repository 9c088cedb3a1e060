"""Give back what start-up used and no longer needs, before the loop settles in for the long wait.

Importing the jobs and reading the settings leave freed memory that the C allocator keeps
for later: `malloc_trim` returns it to the system (about 2 MiB here). The objects that are
left live as long as the host; `gc.freeze` puts them out of the collector's reach, so a
forked run does not copy the pages they sit on when it collects garbage.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc


def settle_after_start() -> None:
    gc.collect()
    gc.freeze()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to give back this way
        ctypes.CDLL("libc.so.6").malloc_trim(0)
