"""This host beside its peers, in one run on one machine; writes a Markdown report and a plot.

Every peer runs as an OS process of its own and is measured from outside (its jobs'
first statements write the time; /proc gives CPU, wakeups and memory): the `schedule`
loop of the seed blog post (`run_pending(); sleep(1)`), `schedule` sleeping
`idle_seconds()`, APScheduler 3 with its thread pool and its process pool, Debian's
cron (as root), and this host with its defaults (a process per run, SQLite).

Sections: start lateness and drift, CPU per run at a light load, idle cost, scale (100 to
10,000 jobs), a burst of 1,000 no-op jobs in one second, and the state store with the
read-only commands. Lateness, drift, light load, idle and burst are repeated
(`--repeats`): lateness is pooled over the repeats (each started at another phase of the
second), the others are medians with their spread. Every target is a ratio to a peer
measured in the same run, and the report says whether it is met.

Run: ./dev bench   (or .venv/bin/python -m benchmarks.compare --help)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import wakeup_cost
from benchmarks.burst import Burst, measure_burst
from benchmarks.idle import Idle, idle_side_by_side
from benchmarks.light import Light, measure_light
from benchmarks.measure import ROOT, Peer, apscheduler_peer, jobhost_peer, schedule_peer
from benchmarks.scale import Scale, measure_scale, per_job_kib
from benchmarks.store_speed import StoreSpeed, measure_store
from benchmarks.timing import Cron, drift, lateness, run_for

SCHEDULE_SLEEP = "schedule, sleep(1)"
SCHEDULE_IDLE = "schedule, idle_seconds()"
APS_THREADS = "APScheduler 3, threads"
APS_PROCESSES = "APScheduler 3, processes"
CRON = "cron (Debian), a Python job"
JOBHOST = "jobhost (process per run)"
JOBHOST_THREAD = "jobhost (thread per run)"
SIZES = (100, 1000, 10000)
SECTIONS = ("timing", "light", "idle", "scale", "burst", "store")
REPEATED = ("timing", "light", "idle", "burst")
BURST_WORKERS = "10"  # as many as APScheduler's pools have by default
DRIFT_SECONDS = 30.0  # at most, each rate peer's drift measurement, a repeat
LIGHT_SECONDS = 30.0  # each peer's measurement at a light load, a repeat
HEARTBEAT_WAKEUPS = 2.0  # a minute: the default heartbeat (30 s) needs these, nothing else


def _q(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _median(values: list[float | None]) -> float:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else float("nan")


@dataclass
class Results:
    """Everything measured, per repeat where repeated."""

    lateness: dict[str, list[list[float]]] = field(default_factory=dict)  # peer -> per repeat, ms
    light: dict[str, list[Light]] = field(default_factory=dict)
    drift: dict[str, list[float | None]] = field(default_factory=dict)
    cron: list[float] = field(default_factory=list)
    cron_note: str | None = None
    idle: dict[str, list[Idle]] = field(default_factory=dict)
    scale: dict[tuple[str, int], Scale] = field(default_factory=dict)
    wakeup_us: dict[int, tuple[float, float]] = field(default_factory=dict)  # n -> (jobhost, schedule)
    burst: dict[str, list[Burst]] = field(default_factory=dict)
    store: dict[str, StoreSpeed] = field(default_factory=dict)
    store_note: str | None = None


class Bench:
    def __init__(self, work: Path, seconds: float, burst_jobs: int, say: Callable[[str], None]):
        self.work = work
        self.seconds = seconds
        self.burst_jobs = burst_jobs
        self.say = say
        self.results = Results()
        self.phase = 0.0  # of a second: where in the second this repeat starts each peer

    def out(self, tag: str) -> Path:
        return self.work / f"{tag}.stamps"

    # -- sections ------------------------------------------------------------

    def timing(self) -> None:
        """Lateness of a job pinned to each second, and drift of an every-second job."""
        r = self.results
        pinned = [  # the sleep(1) loop is late by up to a second by design: drift only, below
            schedule_peer(SCHEDULE_IDLE, self.out("idle"), "pinned", "idle"),
            apscheduler_peer(APS_THREADS, self.out("apt"), "pinned", "threads"),
            apscheduler_peer(APS_PROCESSES, self.out("app"), "pinned", "processes"),
            jobhost_peer(JOBHOST, self.out("jobhost"), self.work, "pinned"),
        ]
        for peer in pinned:
            self.say(f"lateness: {peer.name}")
            starts = run_for(peer, self.seconds, self.phase)
            r.lateness.setdefault(peer.name, []).append(lateness(starts))
            if peer.name in (APS_THREADS, JOBHOST):  # their every-second trigger is this one
                r.drift.setdefault(peer.name, []).append(drift(starts))
        for peer in (
            schedule_peer(SCHEDULE_SLEEP, self.out("rate_sleep1"), "rate", "sleep1"),
            schedule_peer(SCHEDULE_IDLE, self.out("rate_idle"), "rate", "idle"),
        ):
            self.say(f"drift: {peer.name}")
            r.drift.setdefault(peer.name, []).append(drift(run_for(peer, min(self.seconds, DRIFT_SECONDS))))

    def light(self) -> None:
        """CPU per run, the whole tree's, with two no-op jobs due every second."""
        for peer in (
            jobhost_peer(JOBHOST, self.out("l_jobhost"), self.work, "light"),
            apscheduler_peer(APS_PROCESSES, self.out("l_app"), "light", "processes"),
            apscheduler_peer(APS_THREADS, self.out("l_apt"), "light", "threads"),
            schedule_peer(SCHEDULE_IDLE, self.out("l_idle"), "light", "idle"),
        ):
            self.say(f"light load: {peer.name}")
            self.results.light.setdefault(peer.name, []).append(measure_light(peer, LIGHT_SECONDS))

    def idle(self) -> None:
        self.say("idle: every peer at once")
        peers = [
            schedule_peer(SCHEDULE_SLEEP, self.out("i_sleep1"), "idle", "sleep1"),
            schedule_peer(SCHEDULE_IDLE, self.out("i_idle"), "idle", "idle"),
            apscheduler_peer(APS_THREADS, self.out("i_apt"), "idle", "threads"),
            apscheduler_peer(APS_PROCESSES, self.out("i_app"), "idle", "processes"),
            jobhost_peer(JOBHOST, self.out("i_jobhost"), self.work, "idle"),
        ]
        for name, cost in idle_side_by_side(peers, max(self.seconds, 30.0)).items():
            self.results.idle.setdefault(name, []).append(cost)

    def scale(self) -> None:
        for n in SIZES:
            peers: list[Peer] = [
                schedule_peer(SCHEDULE_SLEEP, self.out(f"s_sleep1_{n}"), "scale", "sleep1", n),
                schedule_peer(SCHEDULE_IDLE, self.out(f"s_idle_{n}"), "scale", "idle", n),
                apscheduler_peer(APS_THREADS, self.out(f"s_apt_{n}"), "scale", "threads", n),
                jobhost_peer(JOBHOST, self.out(f"s_jobhost_{n}"), self.work, "scale", n),
            ]
            for peer in peers:
                self.say(f"scale: {peer.name}, {n} jobs")
                self.results.scale[(peer.name, n)] = measure_scale(peer, 10.0)
            self.results.wakeup_us[n] = (wakeup_cost.jobhost_wakeup(n), wakeup_cost.schedule_lib_wakeup(n))

    def burst(self) -> None:
        n = self.burst_jobs
        peers = [
            jobhost_peer(JOBHOST, self.out("b_jobhost"), self.work, "burst", n, JOBS_MAX_WORKERS=BURST_WORKERS),
            jobhost_peer(
                JOBHOST_THREAD,
                self.out("b_thread"),
                self.work,
                "burst",
                n,
                JOBS_MAX_WORKERS=BURST_WORKERS,
                BENCH_ISOLATION="thread",
            ),
            apscheduler_peer(APS_THREADS, self.out("b_apt"), "burst", "threads", n),
            apscheduler_peer(APS_PROCESSES, self.out("b_app"), "burst", "processes", n),
        ]
        for peer in peers:
            self.say(f"burst: {peer.name}, {n} jobs")
            self.results.burst.setdefault(peer.name, []).append(measure_burst(peer, n))

    def store(self) -> None:
        self.say("store: SQLite")
        self.results.store["SQLite"] = measure_store(f"sqlite:///{self.work / 'store.sqlite3'}", self.work)
        try:
            from tests.support.postgres_cluster import Cluster, server_bin
        except ImportError as exc:
            self.results.store_note = f"PostgreSQL not measured: {exc}"
            return
        if server_bin() is None:
            self.results.store_note = "PostgreSQL not measured: no server installed (as root, ./dev bench installs it)"
            return
        self.say("store: PostgreSQL")
        cluster = Cluster(durable=True)
        try:
            self.results.store["PostgreSQL"] = measure_store(cluster.new_database(), self.work)
        finally:
            cluster.destroy()


# -- the report ----------------------------------------------------------------


@dataclass
class Late:
    """Start lateness of one peer, pooled over the repeats (ms), and how the repeats' p99 spread."""

    p50: float
    p99: float
    p999: float
    worst: float
    runs: int
    p99_spread: tuple[float, float]


def _late(r: Results, name: str) -> Late:
    per_repeat = [v for v in r.lateness.get(name, []) if v]
    pooled = sorted(x for v in per_repeat for x in v)
    if not pooled:
        return Late(*(float("nan"),) * 4, 0, (float("nan"), float("nan")))
    p999 = statistics.quantiles(pooled, n=1000, method="inclusive")[998] if len(pooled) > 1 else pooled[0]
    p99s = [_q(v, 99) for v in per_repeat]
    return Late(_q(pooled, 50), _q(pooled, 99), p999, pooled[-1], len(pooled), (min(p99s), max(p99s)))


def _spread(values: list[float], unit: str, digits: int = 0) -> str:
    """The median, with the least and the most of the repeats when there are several."""
    if not values:
        return "-"
    text = f"{statistics.median(values):,.{digits}f} {unit}"
    if len(values) > 1:
        text += f" ({min(values):,.{digits}f} to {max(values):,.{digits}f}, {len(values)} runs)"
    return text


def _idle(r: Results, name: str) -> Idle:
    costs = r.idle.get(name, [])
    return Idle(
        _median([c.cpu_ms_per_minute for c in costs]),
        _median([c.wakeups_per_minute for c in costs]),
        _median([c.rss_mib for c in costs]),
    )


def _burst(r: Results, name: str) -> tuple[float, float, float, float]:
    """Medians of: runs lost, seconds to the last start, host CPU and whole-tree CPU a run (ms)."""
    bursts = r.burst.get(name, [])
    return (
        _median([b.lost for b in bursts]),
        _median([b.took_s for b in bursts]),
        _median([b.host_cpu_ms_per_run for b in bursts]),
        _median([b.tree_cpu_ms_per_run for b in bursts]),
    )


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "**not met**")


def targets(r: Results) -> list[tuple[str, str, str, str]]:
    """(target, ours, the peer's, verdict) for each target of the issue that was measured, in its order."""
    rows: list[tuple[str, str, str, str]] = []
    if r.burst:
        ours, pool = r.burst.get(JOBHOST, []), r.burst.get(APS_PROCESSES, [])
        lost, took, cpu, tree = _burst(r, JOBHOST)
        pool_lost, pool_took, _, pool_tree = _burst(r, APS_PROCESSES)
        rows += [
            (
                (
                    f"1. burst of {r.burst[JOBHOST][0].jobs:,} no-op runs, {BURST_WORKERS} workers: the last starts "
                    "(and returns) no later than APScheduler's process pool's"
                ),
                _spread([b.took_s * 1000 for b in ours], "ms") + f"; {lost:.0f} lost",
                _spread([b.took_s * 1000 for b in pool], "ms") + f"; {pool_lost:.0f} lost",
                _verdict(took <= pool_took and lost == 0),
            ),
            (
                "1. same burst: host CPU a run ≤ the process pool's CPU a job (its whole tree)",
                _spread([b.host_cpu_ms_per_run * 1000 for b in ours], "µs") + f"; whole tree {tree * 1000:,.0f} µs",
                _spread([b.tree_cpu_ms_per_run * 1000 for b in pool], "µs"),
                _verdict(cpu <= pool_tree),
            ),
        ]
    if r.light:
        ours_light, pool_light = r.light.get(JOBHOST, []), r.light.get(APS_PROCESSES, [])
        rows.append(
            (
                "2. light load (two no-op jobs a second): CPU a run, whole tree, ≤ APScheduler's process pool",
                _spread([x.cpu_us_per_run for x in ours_light], "µs")
                + f"; host alone {_median([x.host_cpu_us_per_run for x in ours_light]):,.0f} µs",
                _spread([x.cpu_us_per_run for x in pool_light], "µs"),
                _verdict(
                    _median([x.cpu_us_per_run for x in ours_light]) <= _median([x.cpu_us_per_run for x in pool_light])
                ),
            )
        )
    if r.lateness:
        ours_late, idle_late = _late(r, JOBHOST), _late(r, SCHEDULE_IDLE)
        rows.append(
            (
                "3. start lateness, pooled, p50 and p99 ≤ `schedule` sleeping idle_seconds() (p99.9 shown)",
                f"{ours_late.p50:.3f} / {ours_late.p99:.3f} / {ours_late.p999:.3f} ms over {ours_late.runs} runs",
                f"{idle_late.p50:.3f} / {idle_late.p99:.3f} / {idle_late.p999:.3f} ms over {idle_late.runs} runs",
                _verdict(ours_late.p50 <= idle_late.p50 and ours_late.p99 <= idle_late.p99)
                + ("" if ours_late.runs >= 300 else f" (only {ours_late.runs} runs: 300 wanted)"),
            )
        )
    if r.scale:
        big = max(SIZES)
        ours_scale, aps_scale = r.scale.get((JOBHOST, big)), r.scale.get((APS_THREADS, big))
        rows.append(
            (
                f"4. start to ready with {big:,} jobs (a module of decorated functions) ≤ APScheduler",
                f"{ours_scale.ready_s:.2f} s" if ours_scale else "-",
                f"{aps_scale.ready_s:.2f} s" if aps_scale else "-",
                _verdict(None if not (ours_scale and aps_scale) else ours_scale.ready_s <= aps_scale.ready_s),
            )
        )
    for backend, speed in r.store.items():
        others = ", ".join(f"`{name}` {ms:.0f} ms" for name, ms in speed.others_ms.items())
        rows.append(
            (
                (
                    f"5. ({backend}) read-only commands from the shell: `history --limit 20` over 1,000,000 runs "
                    "under 50 ms"
                ),
                f"{speed.command_ms:.0f} ms (its query {speed.query_ms:.2f} ms); {others}",
                f"`jobs.py --help` {speed.startup_ms:.0f} ms",
                _verdict(speed.command_ms < 50),
            )
        )
    if r.idle:
        ours_idle, loop = _idle(r, JOBHOST), _idle(r, SCHEDULE_IDLE)
        rows += [
            (
                f"6. idle: no more wakeups than the heartbeat needs ({HEARTBEAT_WAKEUPS:g} a minute)",
                f"{ours_idle.wakeups_per_minute:.1f} a minute, CPU {ours_idle.cpu_ms_per_minute:.2f} ms a minute",
                f"`schedule` idle_seconds() {loop.wakeups_per_minute:.1f}, {loop.cpu_ms_per_minute:.2f} ms",
                _verdict(ours_idle.wakeups_per_minute <= HEARTBEAT_WAKEUPS),
            ),
            (
                "6. idle: resident memory within 4 MiB of the `schedule` loop's",
                f"{ours_idle.rss_mib:.1f} MiB",
                f"{loop.rss_mib:.1f} MiB (+4 = {loop.rss_mib + 4:.1f})",
                _verdict(ours_idle.rss_mib <= loop.rss_mib + 4),
            ),
        ]
    if r.drift:
        ours_drift = _median(r.drift.get(JOBHOST, []))
        theirs = _median(r.drift.get(SCHEDULE_IDLE, []))
        rows.append(
            (
                "(kept) every N seconds: no drift (fixed rate)",
                f"{ours_drift:+.3f} ms a run",
                f"schedule {theirs:+.3f} ms a run",
                _verdict(abs(ours_drift) < 0.05),
            )
        )
    if r.scale:
        ours_wake = [r.wakeup_us[n][0] for n in SIZES]
        rows.append(
            (
                f"(kept) a wakeup's cost independent of the jobs ({SIZES[0]:,} → {max(SIZES):,})",
                " → ".join(f"{us:.1f}" for us in ours_wake) + " µs",
                "schedule " + " → ".join(f"{r.wakeup_us[n][1]:.0f}" for n in SIZES) + " µs",
                _verdict(ours_wake[-1] < 2 * ours_wake[0]),
            )
        )
    return rows


def report(r: Results, seconds: float, repeats: int, took: float) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        "# jobhost beside its peers",
        "",
        (
            f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
            f"load average {load} at the end. {repeats} repeat(s) of {seconds:g} s per peer for lateness and "
            f"drift; figures are medians of the repeats. The whole run took {took / 60:.1f} minutes. Every peer "
            "is an OS process of its own, measured from outside."
        ),
        "",
    ]
    rows = targets(r)
    if rows:
        lines += ["## Targets", "", "| target | jobhost | peer, same run | verdict |", "| --- | --- | --- | --- |"]
        lines += [f"| {t} | {ours} | {peer} | {verdict} |" for t, ours, peer, verdict in rows]
        lines.append("")
    if r.lateness:
        lines += [
            "## Start lateness of a job pinned to each wall-clock second",
            "",
            (
                "From the due second to the job's first statement, pooled over the repeats (each started at "
                "another phase of the second); the p99 of each repeat on its own gives the spread."
            ),
            "",
            "| peer | runs | p50 ms | p99 ms | p99.9 ms | worst ms | p99 of each repeat, ms |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name in r.lateness:
            late = _late(r, name)
            lines.append(
                f"| {name} | {late.runs} | {late.p50:.3f} | {late.p99:.3f} | {late.p999:.3f} | {late.worst:.2f} | "
                f"{late.p99_spread[0]:.3f} to {late.p99_spread[1]:.3f} |"
            )
        if r.cron:
            lines.append(
                f"| {CRON}, every minute | {len(r.cron)} | {_q(r.cron, 50):.2f} | {_q(r.cron, 99):.2f} | - | "
                f"{max(r.cron):.2f} | - |"
            )
        elif r.cron_note:
            lines.append(f"| {CRON} | - | - | - | - | - | not measured: {r.cron_note} |")
        lines += ["", "![start lateness per peer](lateness.png)", ""]
    if r.drift:
        lines += [
            "## Drift of a job every second",
            "",
            "How much later than one second after the one before each run starts (the slope over the run).",
            "",
            "| peer | ms a run |",
            "| --- | --- |",
        ]
        lines += [f"| {name} | {_median(values):+.3f} |" for name, values in r.drift.items()]
        lines.append("")
    if r.idle:
        lines += [
            "## Idle: one job due in an hour",
            "",
            "| peer | CPU ms a minute | wakeups a minute | resident MiB (process tree) |",
            "| --- | --- | --- | --- |",
        ]
        for name in r.idle:
            cost = _idle(r, name)
            lines.append(
                f"| {name} | {cost.cpu_ms_per_minute:.2f} | {cost.wakeups_per_minute:.1f} | {cost.rss_mib:.1f} |"
            )
        lines.append("")
    if r.scale:
        names = list(dict.fromkeys(name for name, _ in r.scale))
        lines += [
            "## Scale: jobs registered, none due",
            "",
            (
                "Start to ready (the process started to its jobs registered and its loop waiting), resident "
                "memory, and CPU while waiting. Memory per job is the slope between the smallest and the largest."
            ),
            "",
            "| peer | " + " | ".join(f"{n:,} jobs: ready s / MiB / CPU ms a min" for n in SIZES) + " | KiB a job |",
            "| --- | " + " | ".join("---" for _ in SIZES) + " | --- |",
        ]
        for name in names:
            cells = [
                f"{s.ready_s:.2f} / {s.rss_mib:.1f} / {s.cpu_ms_per_minute:.1f}"
                for s in (r.scale[(name, n)] for n in SIZES)
            ]
            kib = per_job_kib(r.scale[(name, SIZES[0])], r.scale[(name, SIZES[-1])], SIZES[0], SIZES[-1])
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {kib:.1f} |")
        lines += [
            "",
            (
                "One wakeup in-process (`python -m benchmarks.wakeup_cost`): this host's slot queue finding "
                "the one due job, against `schedule`'s `run_pending()` + `idle_seconds` with nothing due."
            ),
            "",
            "| jobs | jobhost µs a wakeup | schedule µs a wakeup |",
            "| --- | --- | --- |",
        ]
        lines += [f"| {n:,} | {ours:.1f} | {theirs:.1f} |" for n, (ours, theirs) in r.wakeup_us.items()]
        lines.append("")
    if r.light:
        lines += [
            "## Light load: two no-op jobs due every second",
            "",
            (
                f"{LIGHT_SECONDS:g} s a repeat. CPU a run: the whole process tree (the scheduler, its pool's "
                "workers, every run's process, also those that ended), and the scheduler's own process alone."
            ),
            "",
            "| peer | runs | CPU µs a run, whole tree | of which the scheduler's own process |",
            "| --- | --- | --- | --- |",
        ]
        for name, values in r.light.items():
            lines.append(
                f"| {name} | {sum(v.runs for v in values)} | {_spread([v.cpu_us_per_run for v in values], '')} | "
                f"{_median([v.host_cpu_us_per_run for v in values]):,.0f} |"
            )
        lines.append("")
    if r.burst:
        jobs = next(iter(r.burst.values()))[0].jobs
        lines += [
            f"## Burst: {jobs:,} no-op jobs due in the same second, {BURST_WORKERS} workers",
            "",
            (
                "Lost: jobs that never started for that instant (APScheduler drops a run more than its misfire "
                "grace, 1 s, late). The last start is also the last return: the jobs do nothing. CPU a run: the "
                "scheduler's own process (all its threads), and its whole tree (pool workers and run processes)."
            ),
            "",
            "| peer | lost | last start after the instant, ms | host CPU µs a run | whole tree CPU µs a run |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name in r.burst:
            lost, took, cpu, tree = _burst(r, name)
            lines.append(f"| {name} | {lost:.0f} | {took * 1000:,.0f} | {cpu * 1000:,.0f} | {tree * 1000:,.0f} |")
        lines += ["", "![starts after the burst's instant](burst.png)", ""]
    if r.store or r.store_note:
        lines += [
            "## State store",
            "",
            (
                "Runs recorded a second: claim, start and settle, as the loop writes them, one after another. "
                "History over one million runs of 100 jobs: the store's query, and `jobs.py history job_7 "
                "--limit 20` as a new process (and the same process's start alone, `jobs.py --help`), and the "
                "other read-only commands the same way."
            ),
            "",
            "| store | runs a second | history query ms | history command ms | of which start ms | list, next, health ms |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for backend, s in r.store.items():
            others = " / ".join(f"{ms:.0f}" for ms in s.others_ms.values())
            lines.append(
                f"| {backend} | {s.runs_per_second:,.0f} | {s.query_ms:.2f} | {s.command_ms:.0f} | {s.startup_ms:.0f} "
                f"| {others} |"
            )
        if r.store_note:
            lines.append(f"\n{r.store_note}")
        lines.append("")
    return "\n".join(lines)


def plot_burst(r: Results, path: Path) -> None:
    """Runs started against time after the burst's instant, each peer's first repeat."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4.5))
    for name, bursts in r.burst.items():
        offsets = [x * 1000 for x in bursts[0].offsets]
        axis.step(offsets, range(1, len(offsets) + 1), where="post", label=f"{name} ({bursts[0].lost} lost)")
    axis.set_xlabel("ms after the instant all were due")
    axis.set_ylabel("runs started")
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot(r: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = {name: [x for repeat in values for x in repeat] for name, values in r.lateness.items()}
    if r.cron:
        data[CRON] = r.cron
    names = list(data)
    figure, axis = plt.subplots(figsize=(9, 0.6 * len(names) + 1.5))
    axis.boxplot([data[name] or [float("nan")] for name in names], orientation="horizontal", showfliers=True)
    axis.set_yticks(range(1, len(names) + 1), names)
    axis.set_xscale("log")
    axis.set_xlabel("start lateness, ms (log scale): due instant to the job's first statement")
    axis.grid(True, axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=100.0, help="how long each peer's lateness is measured, a repeat"
    )
    parser.add_argument("--repeats", type=int, default=3, help="how many times lateness, idle and burst are run")
    parser.add_argument("--burst-jobs", type=int, default=1000, help="jobs due in the same second")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench", help="where the report goes")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()

    def say(text: str) -> None:
        print(f"[{(time.monotonic() - began) / 60:4.1f} min] {text}", flush=True)  # noqa: T201 - progress

    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp), args.seconds, args.burst_jobs, say)
        cron = Cron(bench.out("cron"))
        if "timing" in args.only:
            bench.results.cron_note = Cron.available()
            if bench.results.cron_note is None:
                cron.start()
        try:
            for repeat in range(args.repeats):
                say(f"repeat {repeat + 1} of {args.repeats}")
                bench.phase = repeat / args.repeats
                for section in REPEATED:
                    if section in args.only:
                        getattr(bench, section)()
            for section in ("scale", "store"):
                if section in args.only:
                    getattr(bench, section)()
        finally:
            if "timing" in args.only and bench.results.cron_note is None:
                bench.results.cron = cron.stop()
        results = bench.results
    text = report(results, args.seconds, args.repeats, time.monotonic() - began)
    (args.out / "report.md").write_text(text)
    if results.lateness:
        plot(results, args.out / "lateness.png")
    if results.burst:
        plot_burst(results, args.out / "burst.png")
    print(text)  # noqa: T201 - this is the command's output
    print(f"\nwritten: {args.out / 'report.md'}, {args.out / 'lateness.png'}, {args.out / 'burst.png'}")  # noqa: T201


if __name__ == "__main__":
    main()
