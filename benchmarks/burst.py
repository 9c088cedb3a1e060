"""A thousand jobs due in the same second: are any lost, and what does each run cost the host?

Every job is due at the next multiple of 20 s. The burst is over when every job has
started once, or when no job has started for `QUIET` seconds. A job that never started
for that instant is lost (APScheduler drops a run more than its misfire grace, 1 s,
late). The jobs are no-ops, so a run returns as it starts. CPU is divided by the runs
started, twice: the scheduler's own process (all threads: forks, state writes, log lines),
and its whole tree (its pool's workers, and every run's process, also those that ended).
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
    host_cpu_ms_per_run: float  # the scheduler's own process
    tree_cpu_ms_per_run: float  # and its workers and every run's process, ended ones included
    offsets: list[float]  # seconds from the instant to each start, in order

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
        own0, tree0 = running.cpu_with_reaped()
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
        own1, tree1 = running.cpu_with_reaped()
    finally:
        running.stop()
    stamps = [(n, at) for n, at in read_stamps(peer.out) if instant <= at < instant + BURST_EVERY]
    started = len({n for n, _ in stamps})
    offsets = sorted(at - instant for _, at in stamps)
    per = 1000 / len(stamps) if stamps else float("nan")  # no run started: no cost a run to tell
    return Burst(jobs, started, offsets[-1] if offsets else 0.0, (own1 - own0) * per, (tree1 - tree0) * per, offsets)
