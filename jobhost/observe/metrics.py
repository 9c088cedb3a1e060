"""Prometheus metrics of one host, fed by run lifecycle events like every other observer.

Counters count what this host process saw since it started (Prometheus handles the
reset at a restart); `last success` is looked up once in history for each job the host
has not seen succeed yet, so that an alert on it survives a restart.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobhost.errors import StoreError
from jobhost.observe.events import Reporter, RunEvent
from jobhost.outcomes import RunStatus

if TYPE_CHECKING:
    from jobhost.definition.spec import JobSpec
    from jobhost.store import StateStore

# Jobs run from milliseconds to hours: buckets from 10 ms to 2 h.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200)
LATENESS_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60)
# Series made at zero for every job, so that rate() and absent-series alerts work from the start.
ZEROED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CRASHED)


class Metrics(Reporter):
    """The host's metrics in a registry of their own (not the library's global one)."""

    def __init__(self) -> None:
        disable_created_metrics()  # a `_created` series for each counter doubles the output for nothing
        self.registry = CollectorRegistry()
        self.runs = Counter(
            "jobhost_runs",
            "Runs (and slots that did not run) recorded by this host, by job and outcome; "
            "each attempt of a slot counts under its own outcome.",
            ["job", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "jobhost_run_duration_seconds",
            "How long runs took, from the job's start to its end.",
            ["job"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.lateness = Histogram(
            "jobhost_start_lateness_seconds",
            "How long after its slot's instant a scheduled run started (first attempts, not catch-up runs).",
            buckets=LATENESS_BUCKETS,
            registry=self.registry,
        )
        self.missed = Counter(
            "jobhost_missed_slots", "Slots that passed without a run, by job.", ["job"], registry=self.registry
        )
        self.in_flight = Gauge("jobhost_runs_in_flight", "Runs going on now.", registry=self.registry)
        self.queued = Gauge(
            "jobhost_runs_queued",
            "Runs due but waiting for a free worker or for the previous run of their job.",
            registry=self.registry,
        )
        self.waiting = Gauge(
            "jobhost_runs_waiting", "Slots held until the jobs they come after succeed.", registry=self.registry
        )
        self.heartbeat = Gauge(
            "jobhost_heartbeat_timestamp_seconds", "When the loop last showed it was alive.", registry=self.registry
        )
        self.successes = LastSuccess()
        self.registry.register(self.successes)
        self.build = Info(
            "jobhost_build",
            "The release (commit) of the code this host's loop runs, and its Python; always 1.",
            registry=self.registry,
        )
        # The loop's process: process_start_time_seconds (when the running release started), its CPU,
        # memory and descriptors, under the names every Prometheus exporter gives them.
        ProcessCollector(registry=self.registry)

    def running(self, release: str | None) -> None:
        """The release the loop runs ("unknown" without a REVISION file or a git commit to tell it)."""
        self.build.info({"release": release or "unknown", "python": platform.python_version()})

    def watch_loop(self, in_flight: Callable[[], int], queued: Callable[[], int], waiting: Callable[[], int]) -> None:
        """Where the gauges of the loop's state are read, at each scrape."""
        self.in_flight.set_function(in_flight)
        self.queued.set_function(queued)
        self.waiting.set_function(waiting)

    def attach(self, jobs: Mapping[str, JobSpec], hostname: str, heartbeat_interval: float) -> None:
        for name in jobs:
            for status in ZEROED:
                self.runs.labels(name, str(status))
            self.missed.labels(name)
        self.successes.jobs = list(jobs)

    def on_event(self, event: RunEvent) -> None:
        job = event.context.job
        if event.status == RunStatus.RUNNING:
            lateness = event.extra.get("lateness_ms")
            # A retry or a catch-up run is late by design: only first attempts due now tell the loop's lateness.
            on_time = event.context.attempt == 1 and not event.extra.get("catch_up")
            if event.scheduled and on_time and isinstance(lateness, int | float):
                self.lateness.observe(lateness / 1000)
            return
        if event.status == RunStatus.WAITING:  # a state the slot leaves, not an outcome
            return
        self.runs.labels(job, str(event.status)).inc()
        if event.status == RunStatus.MISSED:
            self.missed.labels(job).inc()
        if event.status.ended and event.duration_ms is not None and event.status != RunStatus.MISSED:
            self.duration.labels(job).observe(event.duration_ms / 1000)
        if event.status == RunStatus.SUCCEEDED:
            self.successes.seen(job)

    def on_beat(self) -> None:
        self.heartbeat.set_to_current_time()


class LastSuccess(Collector):
    """`jobhost_last_success_timestamp_seconds` by job: when its newest succeeded run ended.

    Read from history at scrape time by the HTTP server (one short query a job, each on the
    job's index), so that it holds across restarts and counts the runs of every host sharing
    the store: each job at least every REREAD seconds, and at once after this host saw it
    succeed. A store out of reach leaves the last values and the other metrics standing.
    """

    REREAD = 60.0  # seconds: how stale a job another host ran may be
    NEVER_REREAD = 600.0  # seconds, for a job with no succeeded run (its query scans the job's history)
    REREAD_MAX = 500  # jobs read in one scrape: 10,000 jobs are read over a few scrapes

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.jobs: list[str] = []
        self.store: Callable[[], StateStore] | None = None
        self.monotonic = monotonic
        self._times: dict[str, float] = {}  # job -> when its newest succeeded run ended
        self._read_at: dict[str, float] = {}  # job -> when it was last read
        self._stale: set[str] = set()
        self._lock = threading.Lock()  # the loop marks, the server's threads read

    def seen(self, job: str) -> None:
        """A run of `job` succeeded (in the loop): read its time at the next scrape."""
        with self._lock:
            self._stale.add(job)

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "jobhost_last_success_timestamp_seconds",
            "When the newest succeeded run of each job ended (from history), in seconds since the epoch.",
            labels=["job"],
        )
        if self.store is not None:
            self._reread(self.store())
        for job in self.jobs:
            if job in self._times:
                family.add_metric([job], self._times[job])
        yield family

    def _reread(self, store: StateStore) -> None:
        """Read the jobs due, at most REREAD_MAX a scrape: those seen succeeding first, then the ones
        read longest ago (a job that never succeeded scans its history: only every NEVER_REREAD)."""
        now = self.monotonic()
        with self._lock:
            stale, self._stale = self._stale, set()

        def due(job: str) -> bool:
            every = self.REREAD if job in self._times else self.NEVER_REREAD
            return job in stale or now - self._read_at.get(job, -every) >= every

        order = sorted((job for job in self.jobs if due(job)), key=lambda j: (j not in stale, self._read_at.get(j, 0)))
        for index, job in enumerate(order):
            if index >= self.REREAD_MAX:
                break
            try:
                newest = store.runs(job, 1, RunStatus.SUCCEEDED)
            except StoreError:  # the values read before stand; the rest is read again next time
                with self._lock:
                    self._stale.update(j for j in order[index:] if j in stale)
                return
            self._read_at[job] = now
            ended = newest[0].ended if newest else None
            if ended is not None:
                self._times[job] = ended.timestamp()
        with self._lock:
            self._stale.update(j for j in order[self.REREAD_MAX :] if j in stale)
