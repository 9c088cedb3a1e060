"""Stopping: what SIGTERM, SIGINT or SIGHUP asks of the loop, acted on between its steps.

The signal handlers only queue the signal (in the `Watcher`); the loop acts on it here.
The first signal starts nothing new and gives the runs in flight the stop grace (in
the foreground, a signal stops the run at once); a second one kills them at once.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

from jobhost.config import HostConfig
from jobhost.definition.durations import format_duration
from jobhost.outcomes import Outcome, RunStatus
from jobhost.runs.exits import signal_name
from jobhost.runs.runner import Runner

if TYPE_CHECKING:
    from jobhost.engine.attempt import Attempt

logger = logging.getLogger("jobhost.host")


def _nothing() -> None:
    return None


class Stop:
    """Whether a stop was asked for, and the grace deadline of the runs in flight."""

    def __init__(
        self,
        config: HostConfig,
        monotonic: Callable[[], float],
        *,
        foreground: bool = False,
        on_stopping: Callable[[], None] = _nothing,
        on_handed: Callable[[list[Attempt]], None] = lambda attempts: None,
    ):
        self.config = config
        self.monotonic = monotonic
        self.foreground = foreground
        self.on_stopping = on_stopping  # told once, as the stop begins (the status file says so)
        self.on_handed = on_handed  # the runs their keepers carry on (their claims are the keepers')
        self.signal: int | None = None
        self.deadline: float | None = None

    @property
    def requested(self) -> bool:
        """True once SIGTERM, SIGINT or SIGHUP has been acted on."""
        return self.signal is not None

    @property
    def why(self) -> str:
        """What the status says while stopping."""
        return f"{signal_name(self.signal or signal.SIGTERM)}: runs in flight finish within the stop grace"

    def take_signals(self, runner: Runner) -> None:
        """Act on the signals received since the last look."""
        signals = runner.watcher.signals
        while signals:
            signum = signals.pop(0)
            if self.signal is None and self.foreground:
                self.signal, self.deadline = signum, self.monotonic()
                logger.info("%s: stopping the run", signal_name(signum), extra={"event": "host_stopping"})
            elif self.signal is None:
                self.signal, self.deadline = signum, self.monotonic() + self.config.stop_grace
                self.on_stopping()
                runner.cancel_prepared()
                handed = runner.hand_over()
                in_flight = len(runner.active)
                kept = f"{len(handed)} runs go on to their end under their keepers; " if handed else ""
                logger.info(
                    "%s: starting nothing new; %s%d runs in flight get %s to finish",
                    signal_name(signum),
                    kept,
                    in_flight,
                    format_duration(self.config.stop_grace),
                    extra={
                        "event": "host_stopping",
                        "signal": signal_name(signum),
                        "runs_in_flight": in_flight,
                        "runs_handed_over": len(handed),
                    },
                )
                self.on_handed(handed)
            else:
                logger.warning("second %s: stopping now", signal_name(signum), extra={"event": "host_stopping_now"})
                self.stop_runs(runner, at_once=True)

    def act(self, runner: Runner) -> None:
        """New signals, then the grace deadline: past it, the runs still going are killed."""
        self.take_signals(runner)
        if self.deadline is not None and self.monotonic() >= self.deadline:
            self.stop_runs(runner, at_once=False)

    def stop_runs(self, runner: Runner, *, at_once: bool) -> None:
        name = signal_name(self.signal or signal.SIGTERM)
        if at_once:
            reason = f"the host was stopped ({name} twice); the run was killed"
        elif self.foreground:
            reason = f"stopped by {name}"
        else:
            grace = format_duration(self.config.stop_grace)
            reason = f"the host was stopped ({name}); the run was killed after the {grace} stop grace"
        runner.stop_all(Outcome(RunStatus.INTERRUPTED, reason), at_once=at_once, signum=self.signal or signal.SIGTERM)
        self.deadline = None

    def next_wait(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.monotonic()
