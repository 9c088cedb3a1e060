"""The job every peer runs: its first statement writes the time it started."""

from __future__ import annotations

import time


def stamp(out: str) -> None:
    now = time.time()
    with open(out, "a") as file:
        file.write(f"{now!r}\n")
