"""CPU per run at a light load: two no-op jobs due every wall-clock second, for a while.

The whole tree's CPU (the scheduler, its pool's workers, and every run's process, also those
that have ended) divided by the runs, beside the scheduler's own process alone. A peer that
runs jobs in its own threads has no tree beyond itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from benchmarks.measure import Peer, Running
from benchmarks.peers.stamp import read_stamps

SETTLE = 3.0  # seconds after ready before measuring: the first runs warm the caches


@dataclass
class Light:
    runs: int
    cpu_us_per_run: float  # the whole tree, ended runs included
    host_cpu_us_per_run: float  # the scheduler's own process


def measure_light(peer: Peer, seconds: float) -> Light:
    running = Running(peer)
    try:
        running.wait_ready(timeout=120)
        time.sleep(SETTLE)
        runs0 = len(read_stamps(peer.out))
        own0, tree0 = running.cpu_with_reaped()
        time.sleep(seconds)
        own1, tree1 = running.cpu_with_reaped()
        runs = len(read_stamps(peer.out)) - runs0
    finally:
        running.stop()
    per = 1e6 / max(1, runs)
    return Light(runs, (tree1 - tree0) * per, (own1 - own0) * per)
