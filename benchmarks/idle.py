"""What a peer costs while it waits: one job due in an hour, all peers side by side."""

from __future__ import annotations

import time
from dataclasses import dataclass

from benchmarks.measure import Peer, Running

SETTLE = 5.0  # seconds after ready before measuring: start-up is not idling


@dataclass
class Idle:
    cpu_ms_per_minute: float
    wakeups_per_minute: float
    rss_mib: float


def idle_side_by_side(peers: list[Peer], seconds: float) -> dict[str, Idle]:
    """Every peer idles at once (none does anything, so none disturbs another)."""
    running = [Running(peer) for peer in peers]
    try:
        for each in running:
            each.wait_ready()
        time.sleep(SETTLE)
        before = [each.cpu_and_wakeups() for each in running]
        time.sleep(seconds)
        after = [each.cpu_and_wakeups() for each in running]
        minutes = seconds / 60
        return {
            each.peer.name: Idle((cpu1 - cpu0) * 1000 / minutes, (sw1 - sw0) / minutes, each.rss_mib())
            for each, (cpu0, sw0), (cpu1, sw1) in zip(running, before, after, strict=True)
        }
    finally:
        for each in running:
            each.stop()
