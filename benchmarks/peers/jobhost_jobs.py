"""This host's jobs for each MODE (see the package's docstring), from BENCH_MODE, BENCH_OUT,
BENCH_COUNT and BENCH_ISOLATION; `benchmarks.compare` points JOBS_DIR at a package importing it."""

from __future__ import annotations

import os

from benchmarks.peers import BURST_EVERY
from benchmarks.peers.stamp import stamp
from jobhost import every, job

MODE = os.environ["BENCH_MODE"]
OUT = os.environ["BENCH_OUT"]
COUNT = int(os.environ.get("BENCH_COUNT", "1"))
ISOLATION = os.environ.get("BENCH_ISOLATION", "process")


def _stamping(number: int):
    def run() -> None:
        stamp(OUT, number)

    return run


if MODE in ("pinned", "rate"):  # every(1).seconds counts from the epoch: each slot is a wall-clock second
    job(every(1).seconds, name="pinned")(_stamping(0))
elif MODE == "light":
    for number in range(2):
        job(every(1).seconds, name=f"light_{number}")(_stamping(number))
elif MODE == "idle":
    job(every(1).hours, name="hourly")(_stamping(0))
elif MODE == "scale":  # the package's own module holds the jobs as source: see benchmarks.measure
    pass
elif MODE == "burst":
    for number in range(COUNT):
        job(every(BURST_EVERY).seconds, name=f"job_{number}", isolation=ISOLATION)(_stamping(number))
