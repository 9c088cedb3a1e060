"""From an attempt held to a run going: its record first, then its process (or thread).

The record is written before the fork: a host that lost the claim meanwhile starts
nothing. A prepared run is recorded as starting at its instant, and its clocks are read
after the records, so the work of recording never makes its job late.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import os

from jobhost.clock import Clock
from jobhost.config import HostConfig
from jobhost.definition.spec import JobSpec
from jobhost.engine.attempt import Attempt
from jobhost.engine.handover import Carried, KeeperSetup
from jobhost.engine.leases import Leases
from jobhost.engine.recorder import Recorder
from jobhost.observe.events import Lifecycle
from jobhost.observe.logs import log_output, log_record
from jobhost.outcomes import Outcome, RunStatus
from jobhost.runs.base import Run
from jobhost.runs.process import ProcessRun
from jobhost.runs.runner import Runner, RunNotStarted
from jobhost.runs.thread import ThreadRun

logger = logging.getLogger("jobhost.host")


def prepare_process(config: HostConfig, runner: Runner) -> None:
    """What the host's process needs before its first run: the results directory, the stop
    signals, and a pipe for output that reaches the host's own stdout and stderr."""
    if config.results_dir is not None:
        config.results_dir.mkdir(parents=True, exist_ok=True)
    runner.watcher.install_signals()
    if config.capture_stray_output:
        runner.watcher.capture_stray_output()


class Launched(enum.Enum):
    STARTED = "started"  #: going (or prepared)
    STALLED = "stalled"  #: the store is out of reach: started once it is back
    DROPPED = "dropped"  #: not started, and nothing more to do: the claim is gone or will be taken over
    FAILED = "failed"  #: its process could not be made: settled as crashed by the caller


class Launcher:
    """Starts attempts: records each, makes its run, hands it to the runner."""

    def __init__(
        self,
        jobs: dict[str, JobSpec],
        config: HostConfig,
        recorder: Recorder,
        leases: Leases,
        runner: Runner,
        lifecycle: Lifecycle,
        clock: Clock,
        keeper: KeeperSetup | None = None,
    ):
        self.jobs = jobs
        self.keeper = keeper  # runs outlive a restart of the host (None: they end with it)
        self.config = config
        self.recorder = recorder
        self.leases = leases
        self.runner = runner
        self.lifecycle = lifecycle
        self.clock = clock
        self.failure: Outcome | None = None  # why the last FAILED launch failed

    def launch(self, attempt: Attempt, *, scheduled: bool, may_stall: bool) -> Launched:
        """Record `attempt` as running and start its run. `scheduled`: its lateness is measured;
        `may_stall`: a claimed attempt the store cannot record now waits for it to come back."""
        spec = self.jobs[attempt.job]
        release = attempt.release_at
        started = self.clock()
        lead = 0.0 if release is None else (release - started).total_seconds()
        if release is not None and lead > 0:
            started = release.astimezone(dt.UTC)  # recorded as it will be: the run is released at its instant
        record = self.recorder.record(attempt, RunStatus.RUNNING, started=started)
        if spec.isolation == "thread":  # the run's process is the host's: known now, one write fewer
            record = dataclasses.replace(record, pid=os.getpid())
        recorded = self.recorder.starts(record, attempt)
        held = attempt.token is not None
        if recorded is None and held and not self.recorder.call.up and may_stall:
            return Launched.STALLED
        attempt.release_at = None
        if recorded is False:
            self.leases.let_go(attempt)
            logger.warning(
                "run %s was not started: another host took its claim over",
                attempt.run_id,
                extra={"event": "lease_lost", "lost_run_id": attempt.run_id},
            )
            return Launched.DROPPED
        if recorded is None and held:  # the store failed: the claim, unrenewed, is taken over a lease
            self.leases.let_go(attempt)  # later, and the slot run again
            self.leases.look_soon()
            return Launched.DROPPED
        if lead <= 0:
            self.recorder.started(attempt, started.timestamp(), scheduled=scheduled, isolation=spec.isolation)
        run = self._make_run(spec, attempt, scheduled=scheduled)
        try:
            if lead > 0:  # read the clocks together, after the records: the work above must not make it late
                lead = (release - self.clock()).total_seconds()  # type: ignore[operator]
                self.runner.launch(attempt, run, release_in=lead)
            else:
                self.runner.launch(attempt, run)
        except RunNotStarted as exc:
            self.failure = Outcome(RunStatus.CRASHED, f"the run could not be started: {exc}")
            return Launched.FAILED
        if run.pid is not None and run.pid != record.pid:
            self.recorder.pid(attempt, run.pid)
        return Launched.STARTED

    def _make_run(self, spec: JobSpec, attempt: Attempt, *, scheduled: bool) -> Run:
        if spec.isolation == "thread":
            return ThreadRun(spec, attempt.context, log_output, log_record, self.lifecycle, self.config.data_dir)
        result_file = self.recorder.result_file(attempt.context)
        aftercare = None
        if self.keeper is not None:
            aftercare = Carried(
                attempt,
                spec,
                self.config,
                self.lifecycle,
                self.clock,
                self.keeper,
                shared=self.leases.shared,
                scheduled=scheduled,
                result_file=result_file,
            )
        return ProcessRun(
            spec,
            attempt.context,
            log_output,
            log_record,
            result_file,
            self.lifecycle,
            on_started=lambda at: self.recorder.started(attempt, at, scheduled=scheduled, isolation=spec.isolation),
            data_dir=self.config.data_dir,
            aftercare=aftercare,
        )
