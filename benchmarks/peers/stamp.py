"""The job every peer runs: its first statement writes the time it started."""

from __future__ import annotations

import os
import time


def stamp(out: str, number: int = 0) -> None:
    now = time.time()
    # One write with O_APPEND: lines of jobs running at once never interleave.
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{number} {now!r}\n".encode())
    finally:
        os.close(fd)
    work = float(os.environ.get("BENCH_WORK_MS", "0"))
    if work:  # a job that takes a while (waiting on I/O: no CPU)
        time.sleep(work / 1000)


def read_stamps(path: str | os.PathLike[str]) -> list[tuple[int, float]]:
    """(job number, start time) of each run, in the order written."""
    try:
        text = open(path).read()  # noqa: SIM115 - read once
    except FileNotFoundError:
        return []
    return [(int(number), float(at)) for number, at in (line.split() for line in text.splitlines() if line)]
