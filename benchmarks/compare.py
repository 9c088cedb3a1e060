"""This host beside its peers, in one run on one machine; writes a Markdown report and a plot.

Every peer runs as an OS process of its own and is measured from outside (its jobs'
first statements write the time; /proc gives CPU, wakeups and memory): the `schedule`
loop of the seed blog post (`run_pending(); sleep(1)`), `schedule` sleeping
`idle_seconds()`, APScheduler 3 with its thread pool and its process pool, Debian's
cron (as root), and this host with its defaults (a process per run, SQLite).

Sections: start lateness and drift, idle cost, scale (100 to 10,000 jobs), a burst of
1,000 jobs in one second, and the state store. Lateness, drift, idle and burst are
repeated (`--repeats`) and the report gives medians; every target is a ratio to a peer
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
SECTIONS = ("timing", "idle", "scale", "burst", "store")
BURST_WORK_MS = 10  # each job of the burst waits this long (I/O, no CPU) after its first statement


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

    def out(self, tag: str) -> Path:
        return self.work / f"{tag}.stamps"

    # -- sections ------------------------------------------------------------

    def timing(self) -> None:
        """Lateness of a job pinned to each second, and drift of an every-second job."""
        r = self.results
        pinned = [
            schedule_peer(SCHEDULE_SLEEP, self.out("sleep1"), "pinned", "sleep1"),
            schedule_peer(SCHEDULE_IDLE, self.out("idle"), "pinned", "idle"),
            apscheduler_peer(APS_THREADS, self.out("apt"), "pinned", "threads"),
            apscheduler_peer(APS_PROCESSES, self.out("app"), "pinned", "processes"),
            jobhost_peer(JOBHOST, self.out("jobhost"), self.work, "pinned"),
        ]
        for peer in pinned:
            self.say(f"lateness: {peer.name}")
            starts = run_for(peer, self.seconds)
            r.lateness.setdefault(peer.name, []).append(lateness(starts))
            if peer.name in (APS_THREADS, JOBHOST):  # their every-second trigger is this one
                r.drift.setdefault(peer.name, []).append(drift(starts))
        for peer in (
            schedule_peer(SCHEDULE_SLEEP, self.out("rate_sleep1"), "rate", "sleep1"),
            schedule_peer(SCHEDULE_IDLE, self.out("rate_idle"), "rate", "idle"),
        ):
            self.say(f"drift: {peer.name}")
            r.drift.setdefault(peer.name, []).append(drift(run_for(peer, self.seconds)))

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
        work = {"BENCH_WORK_MS": str(BURST_WORK_MS)}
        peers = [
            jobhost_peer(JOBHOST, self.out("b_jobhost"), self.work, "burst", n, JOBS_MAX_WORKERS="4"),
            jobhost_peer(
                JOBHOST_THREAD,
                self.out("b_thread"),
                self.work,
                "burst",
                n,
                JOBS_MAX_WORKERS="4",
                BENCH_ISOLATION="thread",
            ),
            apscheduler_peer(APS_THREADS, self.out("b_apt"), "burst", "threads", n),
            apscheduler_peer(APS_PROCESSES, self.out("b_app"), "burst", "processes", n),
        ]
        for peer in peers:
            peer.env.update(work)
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


def _late(r: Results, name: str) -> tuple[float, float, float, int]:
    """Medians over the repeats of p50 and p99, the worst start, and the runs measured."""
    per_repeat = r.lateness.get(name, [])
    p50 = _median([_q(v, 50) for v in per_repeat if v])
    p99 = _median([_q(v, 99) for v in per_repeat if v])
    worst = max((max(v) for v in per_repeat if v), default=float("nan"))
    return p50, p99, worst, sum(len(v) for v in per_repeat)


def _idle(r: Results, name: str) -> Idle:
    costs = r.idle.get(name, [])
    return Idle(
        _median([c.cpu_ms_per_minute for c in costs]),
        _median([c.wakeups_per_minute for c in costs]),
        _median([c.rss_mib for c in costs]),
    )


def _burst(r: Results, name: str) -> tuple[float, float, float]:
    bursts = r.burst.get(name, [])
    return (
        _median([b.lost for b in bursts]),
        _median([b.took_s for b in bursts]),
        _median([b.host_cpu_ms_per_run for b in bursts]),
    )


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "**not met**")


def targets(r: Results) -> list[tuple[str, str, str, str]]:
    """(target, ours, the peer's, verdict) for each target of the issue that was measured."""
    rows: list[tuple[str, str, str, str]] = []
    if r.lateness:
        ours, idle, pool = _late(r, JOBHOST), _late(r, SCHEDULE_IDLE), _late(r, APS_PROCESSES)
        rows.append(
            (
                "lateness p50 and p99 ≤ schedule with idle_seconds()",
                f"{ours[0]:.2f} / {ours[1]:.2f} ms",
                f"{idle[0]:.2f} / {idle[1]:.2f} ms",
                _verdict(ours[0] <= idle[0] and ours[1] <= idle[1]),
            )
        )
        rows.append(
            (
                "lateness p50 and p99 < APScheduler's process pool",
                f"{ours[0]:.2f} / {ours[1]:.2f} ms",
                f"{pool[0]:.2f} / {pool[1]:.2f} ms",
                _verdict(ours[0] < pool[0] and ours[1] < pool[1]),
            )
        )
    if r.drift:
        ours_drift = _median(r.drift.get(JOBHOST, []))
        theirs = _median(r.drift.get(SCHEDULE_IDLE, []))
        rows.append(
            (
                "every N seconds: no drift (fixed rate)",
                f"{ours_drift:+.3f} ms a run",
                f"schedule {theirs:+.3f} ms a run",
                _verdict(abs(ours_drift) < 0.05),
            )
        )
    if r.idle:
        ours_idle, loop = _idle(r, JOBHOST), _idle(r, SCHEDULE_IDLE)
        rows += [
            (
                "idle: at most 2 wakeups a minute",
                f"{ours_idle.wakeups_per_minute:.1f}",
                f"schedule idle_seconds() {loop.wakeups_per_minute:.1f}",
                _verdict(ours_idle.wakeups_per_minute <= 2),
            ),
            (
                "idle: CPU under 0.1 ms a minute",
                f"{ours_idle.cpu_ms_per_minute:.2f} ms",
                f"schedule idle_seconds() {loop.cpu_ms_per_minute:.2f} ms",
                _verdict(ours_idle.cpu_ms_per_minute < 0.1),
            ),
            (
                "idle: resident memory ≤ the schedule loop + 10 MiB",
                f"{ours_idle.rss_mib:.1f} MiB",
                f"{loop.rss_mib:.1f} MiB (+10 = {loop.rss_mib + 10:.1f})",
                _verdict(ours_idle.rss_mib <= loop.rss_mib + 10),
            ),
        ]
    if r.scale:
        big = max(SIZES)
        ours_scale = r.scale.get((JOBHOST, big))
        ours_kib = per_job_kib(r.scale[(JOBHOST, SIZES[0])], r.scale[(JOBHOST, big)], SIZES[0], big)
        peer_kib = min(
            per_job_kib(r.scale[(name, SIZES[0])], r.scale[(name, big)], SIZES[0], big)
            for name in (SCHEDULE_SLEEP, APS_THREADS)
        )
        ours_wake = [r.wakeup_us[n][0] for n in SIZES]
        rows += [
            (
                f"scale: a wakeup's cost independent of the jobs ({SIZES[0]:,} → {big:,})",
                " → ".join(f"{us:.1f}" for us in ours_wake) + " µs",
                "schedule " + " → ".join(f"{r.wakeup_us[n][1]:.0f}" for n in SIZES) + " µs",
                _verdict(ours_wake[-1] < 2 * ours_wake[0]),
            ),
            (
                f"scale: start to ready under 2 s with {big:,} jobs",
                f"{ours_scale.ready_s:.2f} s" if ours_scale else "-",
                f"schedule {r.scale[(SCHEDULE_SLEEP, big)].ready_s:.2f} s",
                _verdict(ours_scale is not None and ours_scale.ready_s < 2),
            ),
            (
                "scale: memory per job ≤ the peers'",
                f"{ours_kib:.1f} KiB",
                f"least of the peers {peer_kib:.1f} KiB",
                _verdict(ours_kib <= peer_kib),
            ),
        ]
    if r.burst:
        lost, _, cpu = _burst(r, JOBHOST)
        thread_cpu = _burst(r, JOBHOST_THREAD)[2]
        aps_lost, _, aps_cpu = _burst(r, APS_THREADS)
        rows += [
            (
                "burst: no run lost",
                f"{lost:.0f} lost",
                f"APScheduler threads {aps_lost:.0f} lost",
                _verdict(lost == 0 and _burst(r, JOBHOST_THREAD)[0] == 0),
            ),
            ("burst: host CPU per isolated run ≤ 2 ms", f"{cpu:.2f} ms", "-", _verdict(cpu <= 2)),
            (
                "burst: host CPU per thread-isolated run ≤ APScheduler's thread pool",
                f"{thread_cpu:.3f} ms",
                f"{aps_cpu:.3f} ms",
                _verdict(thread_cpu <= aps_cpu),
            ),
        ]
    for backend, speed in r.store.items():
        rows.append(
            (
                f"store ({backend}): `history NAME --limit 20` on {1_000_000:,} runs under 50 ms",
                f"query {speed.query_ms:.2f} ms; command {speed.command_ms:.0f} ms",
                f"of which Python and imports {speed.startup_ms:.0f} ms",
                _verdict(speed.command_ms < 50) + (" (the query: met)" if speed.query_ms < 50 else ""),
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
            "From the due second to the job's first statement.",
            "",
            "| peer | runs | p50 ms | p99 ms | worst ms |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name in r.lateness:
            p50, p99, worst, runs = _late(r, name)
            lines.append(f"| {name} | {runs} | {p50:.2f} | {p99:.2f} | {worst:.2f} |")
        if r.cron:
            lines.append(
                f"| {CRON}, every minute | {len(r.cron)} | {_q(r.cron, 50):.2f} | {_q(r.cron, 99):.2f} | "
                f"{max(r.cron):.2f} |"
            )
        elif r.cron_note:
            lines.append(f"| {CRON} | - | - | - | not measured: {r.cron_note} |")
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
    if r.burst:
        jobs = next(iter(r.burst.values()))[0].jobs
        lines += [
            f"## Burst: {jobs:,} jobs due in the same second, 4 workers",
            "",
            (
                f"Each job waits {BURST_WORK_MS} ms (I/O, no CPU) after its first statement, so four workers need "
                f"{jobs * BURST_WORK_MS / 4000:g} s or more for the burst. Lost: jobs that never started for that "
                "instant. Host CPU: the scheduler's own process (all its threads; not the runs' processes) "
                "divided by the runs."
            ),
            "",
            "| peer | lost | last start after the instant, s | host CPU ms a run |",
            "| --- | --- | --- | --- |",
        ]
        for name in r.burst:
            lost, took, cpu = _burst(r, name)
            lines.append(f"| {name} | {lost:.0f} | {took:.2f} | {cpu:.3f} |")
        lines.append("")
    if r.store or r.store_note:
        lines += [
            "## State store",
            "",
            (
                "Runs recorded a second: claim, start and settle, as the loop writes them, one after another. "
                "History over one million runs of 100 jobs: the store's query, and `jobs.py history job_7 "
                "--limit 20` as a new process (and the same process's start alone, `jobs.py --help`)."
            ),
            "",
            "| store | runs a second | history query ms | history command ms | of which start ms |",
            "| --- | --- | --- | --- | --- |",
        ]
        for backend, s in r.store.items():
            lines.append(
                f"| {backend} | {s.runs_per_second:,.0f} | {s.query_ms:.2f} | {s.command_ms:.0f} | {s.startup_ms:.0f} |"
            )
        if r.store_note:
            lines.append(f"\n{r.store_note}")
        lines.append("")
    return "\n".join(lines)


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
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each peer's lateness is measured")
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
                for section in ("timing", "idle", "burst"):
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
    print(text)  # noqa: T201 - this is the command's output
    print(f"\nwritten: {args.out / 'report.md'}, {args.out / 'lateness.png'}")  # noqa: T201


if __name__ == "__main__":
    main()
