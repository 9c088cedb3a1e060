"""This host beside its peers, in one run on one machine: start lateness and idle cost.

Each peer runs as an OS process of its own and is measured from outside: the job's
first statement writes the time (lateness = that time minus the wall-clock second it
was due at), and psutil reads the process tree's CPU time, voluntary context
switches (wakeups) and resident memory. Peers: the `schedule` loop of the seed blog
post (`run_pending(); sleep(1)`), `schedule` sleeping `idle_seconds()`, APScheduler 3
with its thread pool and its process pool, and this host (child-process isolation,
the default). Writes a Markdown report and a plot of lateness per peer.

Run: ./dev bench   (or .venv/bin/python -m benchmarks.compare [--seconds 30] [--out var/bench])
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent

JOBS = """
import os
from jobhost import job, every
from benchmarks.peers.stamp import stamp

if os.environ["BENCH_MODE"] == "pinned":
    @job(every(1).seconds)
    def pinned():
        stamp(os.environ["BENCH_OUT"])
else:
    @job(every(1).hours)
    def hourly():
        stamp(os.environ["BENCH_OUT"])
"""


@dataclass
class Peer:
    name: str
    command: list[str]
    env: dict[str, str]
    out: Path  # where its job writes when it starts


def peers(work: Path, mode: str, out: Path) -> list[Peer]:
    python = sys.executable
    jobs = work / f"bench_jobs_{mode}"
    jobs.mkdir(exist_ok=True)
    (jobs / "__init__.py").write_text("")
    (jobs / "bench.py").write_text(textwrap.dedent(JOBS))
    base = {**os.environ, "PYTHONPATH": str(ROOT)}
    host_env = {
        **base,
        "JOBS_DIR": str(jobs),
        "JOBS_STATE_URL": f"sqlite:///{work / f'state-{mode}.sqlite3'}",
        "BENCH_MODE": mode,
        "BENCH_OUT": str(out / "jobhost"),
    }
    module = [python, "-m"]

    def peer(name: str, program: str, tag: str, *args: str) -> Peer:
        return Peer(name, [*module, program, str(out / tag), mode, *args], base, out / tag)

    return [
        peer("schedule, sleep(1)", "benchmarks.peers.schedule_loop", "sleep1", "sleep1"),
        peer("schedule, idle_seconds()", "benchmarks.peers.schedule_loop", "idle", "idle"),
        peer("APScheduler 3, threads", "benchmarks.peers.apscheduler_pool", "apt", "threads"),
        peer("APScheduler 3, processes", "benchmarks.peers.apscheduler_pool", "app", "processes"),
        Peer("jobhost (process per run)", [python, str(ROOT / "jobs.py")], host_env, out / "jobhost"),
    ]


def _start(peer: Peer) -> subprocess.Popen:
    return subprocess.Popen(peer.command, env=peer.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(35)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def lateness(peer: Peer, seconds: float) -> list[float]:
    """Milliseconds from each due second to the job's first statement."""
    out = peer.out
    out.unlink(missing_ok=True)
    process = _start(peer)
    time.sleep(seconds)  # the measurement's length
    _stop(process)
    stamps = [float(line) for line in out.read_text().split()] if out.exists() else []
    return [(t - math.floor(t)) * 1000 for t in stamps[2:]]  # the first runs include start-up


@dataclass
class Idle:
    cpu_ms_per_minute: float
    wakeups_per_minute: float
    rss_mib: float


def idle(peer: Peer, seconds: float) -> Idle:
    """CPU, wakeups and memory of the process tree with one job due in an hour, after start-up."""
    process = _start(peer)
    time.sleep(5)  # start-up is not idling
    tree = psutil.Process(process.pid)

    def totals() -> tuple[float, int]:
        """Seconds on a CPU (from /proc/PID/schedstat, in ns: finer than the 10 ms of cpu_times)
        and voluntary context switches, over the process tree."""
        cpu, switches = 0.0, 0
        for member in [tree, *tree.children(recursive=True)]:
            try:
                cpu += int(Path(f"/proc/{member.pid}/schedstat").read_text().split()[0]) / 1e9
                switches += member.num_ctx_switches().voluntary
            except (psutil.NoSuchProcess, FileNotFoundError):
                pass
        return cpu, switches

    cpu0, switches0 = totals()
    time.sleep(seconds)
    cpu1, switches1 = totals()
    rss = sum(m.memory_info().rss for m in [tree, *tree.children(recursive=True)])
    _stop(process)
    minutes = seconds / 60
    return Idle((cpu1 - cpu0) * 1000 / minutes, (switches1 - switches0) / minutes, rss / 2**20)


def _q(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def report(late: dict[str, list[float]], idles: dict[str, Idle], seconds: float, out: Path) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        "# jobhost beside its peers",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {load} at the end. One run of {seconds:g} s per peer for lateness, "
        f"{seconds:g} s idle; every peer is an OS process of its own, measured from outside.",
        "",
        "## Start lateness of a job pinned to each wall-clock second",
        "",
        "| peer | runs | p50 ms | p99 ms | max ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, values in late.items():
        lines.append(
            f"| {name} | {len(values)} | {_q(values, 50):.2f} | {_q(values, 99):.2f} | {max(values, default=float('nan')):.2f} |"
        )
    lines += [
        "",
        "## Idle: one job due in an hour",
        "",
        "| peer | CPU ms a minute | wakeups a minute (voluntary switches) | resident MiB (process tree) |",
        "| --- | --- | --- | --- |",
    ]
    for name, cost in idles.items():
        lines.append(f"| {name} | {cost.cpu_ms_per_minute:.2f} | {cost.wakeups_per_minute:.1f} | {cost.rss_mib:.1f} |")
    lines += ["", "![start lateness per peer](lateness.png)", ""]
    return "\n".join(lines)


def plot(late: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4.5))
    names = list(late)
    axis.boxplot([late[name] or [float("nan")] for name in names], orientation="horizontal", showfliers=True)
    axis.set_yticks(range(1, len(names) + 1), names)
    axis.set_xscale("log")
    axis.set_xlabel("start lateness, ms (log scale): due second to the job's first statement")
    axis.grid(True, axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each peer is measured")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench", help="where the report goes")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        late = {peer.name: lateness(peer, args.seconds) for peer in peers(work, "pinned", work)}
        idles = {peer.name: idle(peer, args.seconds) for peer in peers(work, "idle", work)}
    text = report(late, idles, args.seconds, args.out)
    (args.out / "report.md").write_text(text)
    plot(late, args.out / "lateness.png")
    print(text)  # noqa: T201 - this is the command's output
    print(f"\nwritten: {args.out / 'report.md'}, {args.out / 'lateness.png'}")  # noqa: T201


if __name__ == "__main__":
    main()
