"""Peers as OS processes, measured from outside: their jobs' stamps, CPU, wakeups and memory."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks.peers.generated import module_of_jobs

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
JOBS_PACKAGE = "from benchmarks.peers.jobhost_jobs import *  # noqa: F403\n"


@dataclass
class Peer:
    """How to start one peer in one mode; its jobs stamp into `out`."""

    name: str
    command: list[str]
    out: Path
    env: dict[str, str] = field(default_factory=dict)
    ready_text: str = "ready"  # the line the peer prints once its jobs are registered


def schedule_peer(name: str, out: Path, mode: str, wait: str, count: int = 1) -> Peer:
    command = [PYTHON, "-m", "benchmarks.peers.schedule_loop", str(out), mode, wait, str(count)]
    return Peer(name, command, out)


def apscheduler_peer(name: str, out: Path, mode: str, pool: str, count: int = 1) -> Peer:
    command = [PYTHON, "-m", "benchmarks.peers.apscheduler_pool", str(out), mode, pool, str(count)]
    return Peer(name, command, out)


def jobhost_peer(name: str, out: Path, work: Path, mode: str, count: int = 1, **env: str) -> Peer:
    """This host on SQLite in `work`, with the settings a user would have, plus `env`."""
    package = work / f"bench_jobs_{os.getpid()}"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(JOBS_PACKAGE)
    for stale in package.glob("scale_*.py"):
        stale.unlink()
    if mode == "scale":  # the jobs as a person writes them, in a module of the package
        (package / f"scale_{count}.py").write_text(f"OUT = {str(out)!r}\n" + module_of_jobs("jobhost", count))
    state = work / f"state-{mode}-{count}-{time.monotonic_ns()}.sqlite3"
    settings = {
        "JOBS_DIR": str(package),
        "JOBS_STATE_URL": f"sqlite:///{state}",
        "JOBS_LOG_LEVEL": "INFO",  # the lines of each run are the host's work too
        "BENCH_MODE": mode,
        "BENCH_OUT": str(out),
        "BENCH_COUNT": str(count),
        **env,
    }
    return Peer(name, [PYTHON, str(ROOT / "jobs.py")], out, settings, ready_text="host_started")


class Running:
    """A started peer: its process, and when its jobs were registered."""

    def __init__(self, peer: Peer, log: Path | None = None):
        self.peer = peer
        peer.out.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), **peer.env}
        self.began = time.monotonic()
        self.process = subprocess.Popen(
            peer.command,
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=open(log, "ab") if log else subprocess.DEVNULL,  # noqa: SIM115 - the child holds it
        )
        self.tree = psutil.Process(self.process.pid)
        self.ready_after: float | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        """Read the peer's output (a full pipe would stop it) and note when it is ready."""
        assert self.process.stdout is not None
        marker = self.peer.ready_text.encode()
        for line in self.process.stdout:
            if not self._ready.is_set() and marker in line:
                self.ready_after = time.monotonic() - self.began
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 120) -> float:
        """Seconds from the start of the process to its `ready` line (the host: `host_started`)."""
        if not self._ready.wait(timeout):
            raise RuntimeError(f"{self.peer.name} was not ready within {timeout} s")
        if self.ready_after is None:
            raise RuntimeError(f"{self.peer.name} exited before it was ready ({self.process.wait()})")
        return self.ready_after

    def members(self) -> list[psutil.Process]:
        try:
            return [self.tree, *self.tree.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_and_wakeups(self, *, tree: bool = True) -> tuple[float, int]:
        """Seconds on a CPU (from /proc/PID/schedstat, in ns: finer than the 10 ms ticks of
        cpu_times) and voluntary context switches, of the process (and its tree), all threads."""
        cpu, switches = 0.0, 0
        for member in self.members() if tree else [self.tree]:
            try:
                cpu += _own_cpu(member.pid)
                switches += member.num_ctx_switches().voluntary
            except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
                pass
        return cpu, switches

    def cpu_with_reaped(self) -> tuple[float, float]:
        """(the process's own seconds on a CPU, the whole tree's), where the tree counts what every
        process that has already ended used too: each member's own time (schedstat, ns) plus what
        its reaped children used (cutime and cstime, in ticks). A run's process lives for
        milliseconds, so it is gone before any look; its parent's counters keep its cost."""
        ticks = os.sysconf("SC_CLK_TCK")
        own, tree = 0.0, 0.0
        for member in self.members():
            try:
                mine = _own_cpu(member.pid)
                fields = Path(f"/proc/{member.pid}/stat").read_text().rsplit(")", 1)[1].split()
                reaped = (int(fields[13]) + int(fields[14])) / ticks  # cutime, cstime: fields 16 and 17
            except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
                continue
            if member is self.tree:
                own = mine
            tree += mine + reaped
        return own, tree

    def rss_mib(self) -> float:
        total = 0
        for member in self.members():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += member.memory_info().rss
        return total / 2**20

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(35)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _own_cpu(pid: int) -> float:
    """Seconds on a CPU of the process's threads (/proc/PID/task/*/schedstat, in ns: finer than
    the 10 ms ticks of cpu_times); not its children's."""
    return sum(int((task / "schedstat").read_text().split()[0]) for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9
