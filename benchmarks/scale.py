"""Many registered jobs: start to ready, memory per job, and what a wakeup costs.

From outside, each peer starts with N jobs due in an hour: seconds until it is ready,
its resident memory, and its CPU while it waits (the `schedule` loop that wakes every
second scans all N jobs each time). In-process, `benchmarks.wakeup_cost` times one
wakeup of this host's slot queue against `schedule`'s `run_pending()` with N jobs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from benchmarks.measure import Peer, Running

SETTLE = 2.0  # seconds after ready before memory and CPU are read


@dataclass
class Scale:
    ready_s: float
    rss_mib: float
    cpu_ms_per_minute: float


def measure_scale(peer: Peer, seconds: float) -> Scale:
    running = Running(peer)
    try:
        ready = running.wait_ready(timeout=300)
        time.sleep(SETTLE)
        rss = running.rss_mib()
        cpu0, _ = running.cpu_and_wakeups()
        time.sleep(seconds)
        cpu1, _ = running.cpu_and_wakeups()
        return Scale(ready, rss, (cpu1 - cpu0) * 1000 / (seconds / 60))
    finally:
        running.stop()


def per_job_kib(small: Scale, large: Scale, small_n: int, large_n: int) -> float:
    """Memory each more job takes: the slope between two sizes (the start-up cost cancels)."""
    return (large.rss_mib - small.rss_mib) * 1024 / (large_n - small_n)
