"""A thousand jobs due in the same second: are any lost, and what does each run cost the host?

Every job is due at the next multiple of 20 s. The burst is over when every job has
started once, or when no job has started for `QUIET` seconds. A job that never started
for that instant is lost (APScheduler drops a run more than its misfire grace, 1 s,
late). The host's CPU (its own process, all threads: forks, state writes, log lines;
not the runs' own processes) is divided by the runs it started.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from benchmarks.measure import Peer, Running
from benchmarks.peers import BURST_EVERY
from benchmarks.peers.stamp import read_stamps

QUIET = 4.0  # seconds without a new start after which a burst is over
LONGEST = 120.0  # seconds a burst may take at most


@dataclass
class Burst:
    jobs: int
    started: int  # distinct jobs that started for the burst's instant
    took_s: float  # from the instant to the last start
    host_cpu_ms_per_run: float

    @property
    def lost(self) -> int:
        return self.jobs - self.started


def measure_burst(peer: Peer, jobs: int) -> Burst:
    running = Running(peer)
    try:
        running.wait_ready(timeout=300)
        instant = math.ceil(time.time() / BURST_EVERY) * BURST_EVERY
        if instant - time.time() < 1.0:  # too close to be sure the peer has it queued
            instant += BURST_EVERY
        time.sleep(max(0.0, instant - time.time() - 0.5))
        cpu0, _ = running.cpu_and_wakeups(tree=False)
        last_count, last_change = 0, time.monotonic()
        deadline = time.monotonic() + LONGEST
        while time.monotonic() < deadline:
            time.sleep(0.25)
            stamps = [(n, at) for n, at in read_stamps(peer.out) if instant <= at < instant + BURST_EVERY]
            if len({n for n, _ in stamps}) >= jobs:
                break
            if len(stamps) != last_count:
                last_count, last_change = len(stamps), time.monotonic()
            elif time.time() > instant + QUIET and time.monotonic() - last_change > QUIET:
                break
        cpu1, _ = running.cpu_and_wakeups(tree=False)
    finally:
        running.stop()
    stamps = [(n, at) for n, at in read_stamps(peer.out) if instant <= at < instant + BURST_EVERY]
    started = len({n for n, _ in stamps})
    took = max((at for _, at in stamps), default=instant) - instant
    return Burst(jobs, started, took, (cpu1 - cpu0) * 1000 / max(1, len(stamps)))
