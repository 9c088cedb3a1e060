"""The keeper: a run's own parent, out of the host's process group, so that a restart of the host
need not kill the run (docs/design.md, "Hand-over").

The host forks the keeper, the keeper forks the job. While the host lives the keeper does
nothing but wait: the host reads the job's pipes itself, and signals the keeper's group as it
would the job's (the keeper ignores the stop signals; SIGKILL ends both). When the host stops it
sends the keeper an order to hand over; from then on the keeper carries the run to its end
alone: it reads the job's pipes, enforces its timeout, and has the engine's `Aftercare` log its
lines, record its outcome and say so. If the host dies without that order (SIGKILL, out of
memory), the keeper kills its group at once: the run dies with the host, as it always has.

Two pipes join the three of the job: orders (host to keeper, one JSON line) and reports
(keeper to host: "carrying" once it has taken the run, or the job's wait status, which only
the keeper can read, before it exits).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from jobhost.descriptors import keep_only
from jobhost.outcomes import Outcome, RunStatus
from jobhost.runs.child import set_process_name
from jobhost.runs.exits import HARNESS_FAILED

if TYPE_CHECKING:
    from jobhost.runs.process import ProcessRun

ANSWER_WAIT = 2.0  # seconds the host waits for a keeper to answer a hand-over order
ANSWER_MARGIN = 0.5  # of which the last are for the answer to arrive: a keeper takes no order later
LOOK_EVERY = 0.5  # seconds between two looks for a host, while none runs
ALIVE_LOOK_EVERY = 2.0  # seconds between two looks while one runs (a later stop of it counts too)
LEASE_LOST = "the lease of its claim ran out and another host took the run over; it was stopped"
CANCEL_LOOK_EVERY = 1.0  # seconds between two looks for a person's cancel of the run
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class Aftercare(Protocol):
    """What the engine does for a run the keeper carries after the host has gone (it knows the
    store, the log and the reporters; the keeper knows processes)."""

    stop_grace: float  # how long to wait for a host to follow before the run is stopped
    renew_every: float | None  # seconds between two renewals of the run's claim (None: none)

    def begin(self) -> None:
        """In the keeper, once it carries the run: a log and a store of its own."""

    def handing_host_runs(self) -> bool:
        """Whether the host that handed the run over has not exited yet (it finishes its other runs)."""

    def successor(self) -> bool:
        """Whether a host loop of this name runs now, other than the one that handed the run over."""

    def renew(self) -> bool:
        """Keep the run's claim (a shared store's lease); False if another host has taken it over."""

    def cancelled(self) -> Outcome | None:
        """The outcome of a cancel a person asked for since, if any (the run is then stopped)."""

    def settle(self, outcome: Outcome, duration_ms: int) -> None:
        """Record how the run ended and say so, once."""


@dataclass
class HandOver:
    """What the host knew of the run when it let go: the keeper goes on from there."""

    held: dict[str, tuple[str, bytes]]  # per stream: a line not ended yet (LineSplitter.held)
    control: bytes  # a control message not ended yet
    result: dict[str, Any] | None  # the job's result, if it came already
    running_for: float  # seconds since the job started
    deadline_in: float | None  # seconds until its timeout
    kill_in: float | None  # seconds until a SIGKILL already due (a stop under way)
    forced: Outcome | None  # the outcome a stop under way gives it
    take_by: float  # a time.monotonic() instant (one clock for every process): an order read later is stale

    def encode(self) -> bytes:
        order = {
            "t": "hand_over",
            "held": {name: [text, base64.b64encode(raw).decode()] for name, (text, raw) in self.held.items()},
            "control": base64.b64encode(self.control).decode(),
            "result": self.result,
            "running_for": self.running_for,
            "deadline_in": self.deadline_in,
            "kill_in": self.kill_in,
            "forced": None if self.forced is None else [str(self.forced.status), self.forced.reason],
            "take_by": self.take_by,
        }
        return (json.dumps(order) + "\n").encode()

    @classmethod
    def decode(cls, line: bytes) -> HandOver:
        order = json.loads(line)
        forced = order["forced"]
        return cls(
            {name: (text, base64.b64decode(raw)) for name, (text, raw) in order["held"].items()},
            base64.b64decode(order["control"]),
            order["result"],
            order["running_for"],
            order["deadline_in"],
            order["kill_in"],
            None if forced is None else Outcome(RunStatus(forced[0]), forced[1]),
            order["take_by"],
        )


@dataclass(frozen=True)
class KeeperPipes:
    """The descriptors of one kept run, as each process holds them after the fork."""

    job_ends: tuple[int, int, int]  # the write ends of stdout, stderr and control (the job's)
    read_ends: dict[int, str]  # the read ends of those three, by stream name
    orders: int  # read end in the keeper
    reports: int  # write end in the keeper


def keep(run: ProcessRun, pipes: KeeperPipes, host_pid: int, start_job: Callable[[int], NoReturn]) -> NoReturn:
    """The keeper's life, in the process the host forked; never returns. `start_job(keeper_pid)`
    becomes the job in the keeper's child."""
    try:
        os.setsid()  # a session and group of its own: supervisord's stop reaches the host's group only
        signal.set_wakeup_fd(-1)
        for signum in _STOP_SIGNALS:  # the host's and the keeper's own ends are told through the orders pipe
            signal.signal(signum, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        set_process_name(f"keep:{run.spec.name}")
        if os.getppid() != host_pid:  # the host died before the keeper was ready
            os._exit(HARNESS_FAILED)
        release = () if run.release is None else (run.release.fd,)
        keep_only({*pipes.job_ends, *pipes.read_ends, pipes.orders, pipes.reports, *release})
        me = os.getpid()
        job = os.fork()
        if job == 0:  # it sets its own handlers of the stop signals: nothing ignored reaches what it runs
            start_job(me)
        for fd in (*pipes.job_ends, *release):
            os.close(fd)
        _Keeper(run, pipes, job).wait()
    finally:
        os._exit(HARNESS_FAILED)


class _Keeper:
    def __init__(self, run: ProcessRun, pipes: KeeperPipes, job: int):
        self.run = run
        self.pipes = pipes
        self.job = job
        self.orders = b""
        try:
            self.pidfd: int | None = os.pidfd_open(job)
        except (AttributeError, OSError):
            self.pidfd = None

    def wait(self) -> NoReturn:
        """Until the job ends (report its wait status, exit) or the host hands the run over."""
        poller = select.poll()
        poller.register(self.pipes.orders, select.POLLIN)
        if self.pidfd is not None:
            poller.register(self.pidfd, select.POLLIN)
        while True:
            poller.poll(None if self.pidfd is not None else 200)
            if (order := self._order()) is not None:
                self._carry(order, None)
            pid, status = os.waitpid(self.job, os.WNOHANG)
            if pid:
                self._ended(status)

    def _order(self) -> HandOver | None:
        """The hand-over order, once it has come whole; the host's death kills the run with it."""
        try:
            data = os.read(self.pipes.orders, 65536) if _readable(self.pipes.orders) else None
        except OSError:
            data = b""
        if data is None:
            return None
        if not data:  # the host is gone and never said to hand over: nothing may outlive it unseen
            os.killpg(0, signal.SIGKILL)
        self.orders += data
        if b"\n" not in self.orders:
            return None
        line, self.orders = self.orders.split(b"\n", 1)
        order = HandOver.decode(line)
        if time.monotonic() > order.take_by:  # the host has given up waiting: the run stays its own
            return None
        return order

    def _ended(self, status: int) -> NoReturn:
        """The job ended while the host lives: the host records it, unless it has just handed it over."""
        os.set_blocking(self.pipes.orders, False)
        with contextlib.suppress(BlockingIOError):
            if (order := self._order()) is not None:
                self._carry(order, status)
        _send(self.pipes.reports, {"t": "exited", "status": status})
        os._exit(0)

    def _carry(self, order: HandOver, status: int | None) -> NoReturn:
        _send(self.pipes.reports, {"t": "carrying"})
        os.close(self.pipes.reports)
        os.close(self.pipes.orders)
        aftercare = self.run.aftercare
        assert aftercare is not None
        try:
            aftercare.begin()
            outcome, duration_ms = carry(self.run, order, self.job, self.pidfd, status, self.pipes.read_ends)
            aftercare.settle(outcome, duration_ms)
        finally:
            os.killpg(0, signal.SIGKILL)  # whatever the job left behind, and the keeper itself
        raise AssertionError("unreachable")


class HostWatch:
    """Whether a host of this name is running, as a kept run needs to know: the stop grace runs
    only while none is (from when the host that handed the run over has exited, and again
    whenever the one after it stops), and ends in a stop of the run."""

    def __init__(self, aftercare: Aftercare, now: float):
        self.aftercare = aftercare
        self.waiting_since: float | None = None  # since when no host has run
        self.next_look = now
        self.given_up = False

    def look(self, now: float) -> bool:
        """Look if it is time to; True once the grace has run out with no host (the run is to stop)."""
        if self.given_up or now < self.next_look:
            return False
        if self.aftercare.handing_host_runs():  # it still finishes what it did not hand over
            self.next_look = now + LOOK_EVERY
            return False
        if self.aftercare.successor():
            self.waiting_since, self.next_look = None, now + ALIVE_LOOK_EVERY
            return False
        if self.waiting_since is None:
            self.waiting_since = now
        self.next_look = now + LOOK_EVERY
        if now - self.waiting_since < self.aftercare.stop_grace:
            return False
        self.given_up = True
        return True


def carry(
    run: ProcessRun,
    order: HandOver,
    job: int,
    pidfd: int | None,
    status: int | None,
    read_ends: dict[int, str],
) -> tuple[Outcome, int]:
    """Watch the run alone to its end, as the host did: its pipes, its timeout, a person's cancel,
    its claim, and whether a host runs (none within the stop grace: the stop was a real one, and
    the run is stopped)."""
    aftercare = run.aftercare
    assert aftercare is not None
    now = time.monotonic()
    started = now - order.running_for
    run.go_on_alone(job, pidfd, status, read_ends, order, now)
    hosts = HostWatch(aftercare, now)
    next_renew = None if aftercare.renew_every is None else now + aftercare.renew_every
    next_cancel_look: float | None = now + CANCEL_LOOK_EVERY
    poller = select.poll()
    for fd in run.fds():
        poller.register(fd, select.POLLIN)
    while not run.done:
        now = time.monotonic()
        looks = (run.next_deadline(), next_renew, None if hosts.given_up else hosts.next_look, next_cancel_look)
        limits = [t for t in looks if t is not None]
        if run.needs_polling:
            limits.append(now + 0.2)
        timeout = max(0.0, min(limits) - now) if limits else None
        for fd, _ in poller.poll(None if timeout is None else int(timeout * 1000) + 1):
            for done in run.on_readable(fd, time.monotonic()):
                _forget(poller, done)
        now = time.monotonic()
        for done in run.poll(now):
            _forget(poller, done)
        if hosts.look(now):
            grace = f"{aftercare.stop_grace:g}s"
            reason = (
                f"the host was stopped and none started after it within the {grace} stop grace; the run was stopped"
            )
            run.stop(Outcome(RunStatus.INTERRUPTED, reason), now)
        if next_cancel_look is not None and now >= next_cancel_look:
            next_cancel_look = now + CANCEL_LOOK_EVERY
            if run.forced is None and (cancel := aftercare.cancelled()) is not None:
                run.stop(cancel, now)
                next_cancel_look = None
        if next_renew is not None and now >= next_renew:
            next_renew = now + (aftercare.renew_every or 0.0)
            if not aftercare.renew():  # another host took the claim over: the run is its now
                run.stop(Outcome(RunStatus.INTERRUPTED, LEASE_LOST), now, at_once=True)
                next_renew = None
    return run.outcome(), max(0, int((time.monotonic() - started) * 1000))


def _forget(poller: select.poll, fd: int) -> None:
    with contextlib.suppress(KeyError):
        poller.unregister(fd)
    with contextlib.suppress(OSError):
        os.close(fd)


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _send(fd: int, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the host is gone: nobody to tell
        os.write(fd, (json.dumps(message) + "\n").encode())
