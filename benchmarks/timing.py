"""When jobs start: lateness against the due second, drift of an every-second job, and cron's.

Lateness is the job's first statement minus the wall-clock second it was due at; drift is
how much later than one second each run of an every-second job starts after the one
before (the slope of start times against run numbers, less one second).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.measure import PYTHON, ROOT, Peer, Running
from benchmarks.peers.stamp import read_stamps

WARM_UP_RUNS = 2  # the first runs of a peer include its start


@dataclass
class Timing:
    lateness_ms: list[float]
    drift_ms: float | None  # per run; None when the peer's runs are not every second


def run_for(peer: Peer, seconds: float, phase: float = 0.0) -> list[float]:
    """The start times of the peer's job over `seconds` after it is ready. The peer is started
    `phase` of a second after a whole second, so that repeats at different phases meet the
    due seconds at different points of the peer's start and of its timers."""
    time.sleep((phase - time.time()) % 1.0)
    running = Running(peer)
    try:
        running.wait_ready()
        time.sleep(seconds)  # the measurement's length
    finally:
        running.stop()
    return [at for _, at in read_stamps(peer.out)]


def lateness(starts: list[float], period: float = 1.0) -> list[float]:
    """Milliseconds from each due instant (a whole multiple of `period`) to the job's first statement."""
    return [(at - math.floor(at / period) * period) * 1000 for at in starts[WARM_UP_RUNS:]]


def drift(starts: list[float]) -> float | None:
    """Milliseconds each run starts later than one second after the one before (least squares)."""
    starts = starts[WARM_UP_RUNS:]
    if len(starts) < 3:
        return None
    n = len(starts)
    mean_k, mean_t = (n - 1) / 2, sum(starts) / n
    slope = sum((k - mean_k) * (t - mean_t) for k, t in enumerate(starts)) / sum((k - mean_k) ** 2 for k in range(n))
    return (slope - 1.0) * 1000


class Cron:
    """Debian's cron running a Python job every minute, for as long as the benchmark runs (root only)."""

    ENTRY = Path("/etc/cron.d/jobhost-bench")

    def __init__(self, out: Path):
        self.out = out
        self.daemon: subprocess.Popen | None = None

    @staticmethod
    def available() -> str | None:
        """None if cron can be measured here, else why not."""
        if os.geteuid() != 0:
            return "not root: cron's jobs are set in /etc/cron.d"
        if shutil.which("cron") is None:
            return "cron is not installed (apt-get install cron)"
        return None

    def start(self) -> None:
        out = self.out
        out.unlink(missing_ok=True)
        script = ROOT / "benchmarks" / "peers" / "cron_job.py"
        self.ENTRY.write_text(f"* * * * * root {PYTHON} {script} {out}\n")
        running = subprocess.run(["pgrep", "-x", "cron"], capture_output=True).returncode == 0
        if not running:  # no init here runs it: this benchmark does, in the foreground, and stops it
            self.daemon = subprocess.Popen(["cron", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> list[float]:
        self.ENTRY.unlink(missing_ok=True)
        if self.daemon is not None:
            self.daemon.terminate()
            self.daemon.wait(10)
        # A stamp a little past its minute: the job was late, not the minute early.
        return [(at - math.floor(at / 60) * 60) * 1000 for _, at in read_stamps(self.out)]
