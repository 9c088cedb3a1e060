"""One run in a forked child process, watched by the host's loop without blocking it.

The loop owns the timing: it tells the run which of its file descriptors are
readable and calls `poll` with the monotonic time; the run never sleeps.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from jobhost.context import RunContext
from jobhost.definition.durations import format_duration
from jobhost.definition.spec import JobSpec
from jobhost.descriptors import blind_in_children, forget
from jobhost.observe.events import Lifecycle
from jobhost.outcomes import Outcome, RunStatus
from jobhost.output import READ_SIZE, LineSplitter
from jobhost.runs.child import Release, read_result, run_child, started_at
from jobhost.runs.exits import RETURNED_UNREPORTED, UNREPORTED, describe_wait_status
from jobhost.runs.keeper import ANSWER_MARGIN, ANSWER_WAIT, Aftercare, HandOver, KeeperPipes, keep
from jobhost.runs.results import outcome_of

TERM_GRACE = 5.0  # seconds between SIGTERM and SIGKILL for a run being stopped
DRAIN_GRACE = 2.0  # seconds to wait for output pipes after the child is gone

LineSink = Callable[[RunContext, str, str], None]
RecordSink = Callable[[RunContext, dict], None]
StartSink = Callable[[float], None]  # a prepared run's job began, at this wall-clock time
RELEASE_RECHECK = 0.01  # seconds between two looks at whether a prepared child was released
NOT_RELEASED = "the host was stopped before the run's slot came; the job did not start"
LEFT_IN_FILE = "the job's process could not report it to the host; read from the outcome file it left"


class ProcessRun:
    """A run executing in its own process group."""

    def __init__(
        self,
        spec: JobSpec,
        context: RunContext,
        on_line: LineSink,
        on_record: RecordSink,
        result_file: Path | None = None,
        lifecycle: Lifecycle | None = None,
        on_started: StartSink | None = None,
        data_dir: Path | None = None,
        aftercare: Aftercare | None = None,
    ):
        self.spec = spec
        # With an aftercare, the run has a keeper (runs/keeper.py): a parent of its own that can
        # carry it to its end once the host has gone. `pid` is then the keeper's.
        self.aftercare = aftercare
        self.data_dir = data_dir  # JOBS_DATA_DIR, for a job that takes `data_dir`
        self.on_started = on_started
        self.lifecycle = lifecycle or Lifecycle()
        self.result_file = result_file
        self.context = context
        self.on_line = on_line
        self.on_record = on_record
        self.pid: int | None = None
        self.pidfd: int | None = None
        self.wait_status: int | None = None
        self.result: dict | None = None
        self.forced: Outcome | None = None
        self.kill_at: float | None = None
        self.drain_until: float | None = None
        self.deadline: float | None = None
        self._streams: dict[int, tuple[str, LineSplitter | None]] = {}
        self._control = b""
        self._started: mmap.mmap | None = None
        self._look_again: float | None = None  # when to look whether a prepared child was released
        self._go: int | None = None  # the host's end of a prepared child's release pipe
        self.released: bool | None = None  # None: started at once; False: waiting for its instant
        self.release: Release | None = None
        self.cancelled = False
        self._orders: int | None = None  # the host's end of a keeper's orders pipe
        self._report = b""
        self.job_status: int | None = None  # the job's wait status, as its keeper read it
        self.handed = False  # its keeper carries it now: the host has let go
        self._alone = False  # this is the keeper's copy, carrying the run without the host

    # -- starting --------------------------------------------------------

    def start(self, now: float, release_at: float | None = None) -> None:
        """Fork the child; raises OSError if the process cannot be made.

        With `release_at` (a `time.monotonic()` instant), the child gets ready and
        calls the job at that instant: the fork, the claim and the records are done
        before the slot instead of making the job late. `cancel` stops it before then.
        """
        if release_at is None:
            self._fork(now, None)
            return
        delay = max(0.0, release_at - time.monotonic())
        self._started = mmap.mmap(-1, mmap.PAGESIZE)  # shared with the child: it writes when it was released
        go_r, self._go = os.pipe()
        try:
            self._fork(now + delay, Release(release_at, go_r, self._started))
        except OSError:
            os.close(self._go)
            self._go = None
            raise
        finally:
            os.close(go_r)
        self.released = False
        self._look_again = now + delay + RELEASE_RECHECK  # not at the instant: the job has the CPU then

    @property
    def prepared(self) -> bool:
        """Forked ahead of its slot and not released yet: not going, and nothing started."""
        return self.released is False

    def held_fds(self) -> list[int]:
        """Descriptors the loop keeps for this run but does not wait on (asked for as it closes them)."""
        if self._orders is not None:
            forget(self._orders)
        return [fd for fd in (self._go, self._orders) if fd is not None]

    def cancel(self) -> list[int]:
        """Tell a child still waiting for its instant not to call the job (it says which it did);
        return the descriptors to close."""
        go, self._go = self._go, None
        return [go] if go is not None else []

    def _fork(self, now: float, release: Release | None) -> None:
        pipes = {name: os.pipe() for name in ("stdout", "stderr", "control")}
        kept = self.aftercare is not None
        orders, reports = (os.pipe(), os.pipe()) if kept else ((-1, -1), (-1, -1))
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        host_pid = os.getpid()
        write_ends = (pipes["stdout"][1], pipes["stderr"][1], pipes["control"][1])
        self.release = release
        try:
            pid = os.fork()
        except OSError:
            for fd in (*(fd for pair in pipes.values() for fd in pair), *orders, *reports):
                if fd >= 0:
                    os.close(fd)
            raise
        if pid == 0 and kept:  # the keeper, which forks the job
            read_ends = {read_end: name for name, (read_end, _) in pipes.items()}
            keep(self, KeeperPipes(write_ends, read_ends, orders[0], reports[1]), host_pid, self._job(write_ends))
        if pid == 0:  # the child: it lets go of every other descriptor of the host itself
            self._job(write_ends)(host_pid)
        self.pid = pid
        for name, (read_end, write_end) in pipes.items():
            os.close(write_end)
            os.set_blocking(read_end, False)
            self._streams[read_end] = (name, None if name == "control" else LineSplitter())
        if kept:
            os.close(orders[0])
            os.close(reports[1])
            self._orders = orders[1]
            blind_in_children(self._orders)  # held by a fork of a thread job, it would hide the host's death
            os.set_blocking(reports[0], False)
            self._streams[reports[0]] = ("report", None)
        else:
            with contextlib.suppress(OSError):  # the child does it too; whichever runs first wins the race
                os.setpgid(pid, pid)
        try:
            self.pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.pidfd = None
        if self.spec.timeout is not None:
            self.deadline = now + self.spec.timeout

    def _job(self, write_ends: tuple[int, int, int]) -> Callable[[int], NoReturn]:
        """What becomes the job in a forked process whose parent is `parent` (the host, or the keeper)."""

        def become_job(parent: int) -> NoReturn:
            run_child(
                self.spec,
                self.context,
                parent,
                write_ends,
                self.result_file,
                self.lifecycle,
                self.release,
                self.data_dir,
                own_group=self.aftercare is None,
            )

        return become_job

    # -- what the loop watches -------------------------------------------

    def fds(self) -> list[int]:
        """Descriptors the loop should wait on for this run."""
        fds = list(self._streams)
        if self.pidfd is not None and self.wait_status is None:
            fds.append(self.pidfd)
        return fds

    def next_deadline(self) -> float | None:
        """The next monotonic time at which `poll` has something to do."""
        times = [t for t in (self.kill_at, self.drain_until, self._look_again) if t is not None]
        if self.forced is None and self.deadline is not None:
            times.append(self.deadline)
        return min(times) if times else None

    @property
    def needs_polling(self) -> bool:
        """True when the exit of the child cannot be watched with a pidfd."""
        return self.pidfd is None and self.wait_status is None

    @property
    def done(self) -> bool:
        return self.wait_status is not None and not self._streams

    def on_readable(self, fd: int, now: float) -> list[int]:
        """Handle a readable descriptor; return the descriptors the run is done with (for the loop to close)."""
        if fd == self.pidfd:
            self._reap(now)
            return [fd] if self.wait_status is not None else []
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return []
        except OSError:
            data = b""
        name, splitter = self._streams[fd]
        self._check_released(now)  # "run started" comes before the job's first line or record
        if name == "report":
            self._read_report(data)
        elif splitter is None:
            self._read_control(data)
        else:
            for line in splitter.feed(data) if data else splitter.finish():
                self.on_line(self.context, name, line)
        if data:
            return []
        self._close(fd)
        return [fd]

    def poll(self, now: float) -> list[int]:
        """Act on deadlines and reap the child; return the descriptors the run is done with."""
        closed: list[int] = []
        if self._look_again is not None and now >= self._look_again:
            self._check_released(now)
        if self.wait_status is None and self.pidfd is None:
            self._reap(now)
        if self.forced is None and self.deadline is not None and now >= self.deadline:
            self.stop(
                Outcome(
                    RunStatus.TIMED_OUT,
                    f"still running after its {format_duration(self.spec.timeout or 0)} timeout; killed with its process group",
                ),
                now,
            )
        if self.kill_at is not None and now >= self.kill_at and self.wait_status is None:
            self._signal_group(signal.SIGKILL)
            self.kill_at = None
        if self.drain_until is not None and now >= self.drain_until:
            for fd in list(self._streams):
                self._flush_stream(fd)
                self._close(fd)
                closed.append(fd)
        return closed

    def stop(self, outcome: Outcome, now: float, *, at_once: bool = False, signum: int = signal.SIGTERM) -> None:
        """End the run with `outcome`: `signum` to its group (the signal the host itself was
        stopped by, so the job's traceback names the same one as its record), SIGKILL after
        TERM_GRACE (or at once)."""
        if self.forced is None:
            self.forced = outcome
        if self.wait_status is not None:
            return
        if at_once:
            self._signal_group(signal.SIGKILL)
            self.kill_at = None
        else:
            self._signal_group(signum)
            self.kill_at = now + TERM_GRACE

    def outcome(self) -> Outcome:
        """How the run ended; call when `done`."""
        result = self.result or {}
        trace = result.get("traceback")
        if self.cancelled:
            return Outcome(RunStatus.INTERRUPTED, NOT_RELEASED)
        if self.forced is not None:
            return Outcome(self.forced.status, self.forced.reason, trace, result.get("exception"))
        if result:
            return outcome_of(result)
        status = self.job_status if self.job_status is not None else self.wait_status
        assert status is not None
        # The job ended and its process could not say so (it had closed the pipe, or died just
        # after): what it left in its outcome file is the truth.
        left = read_result(self.result_file) if self.result_file is not None else None
        if left is not None:
            ended = outcome_of(left)
            reason = f"{ended.reason} ({LEFT_IN_FILE})" if ended.reason else LEFT_IN_FILE
            return Outcome(ended.status, reason, ended.traceback, ended.exception)
        code = os.waitstatus_to_exitcode(status)
        if code in UNREPORTED:
            return Outcome(RunStatus.SUCCEEDED if code == RETURNED_UNREPORTED else RunStatus.FAILED, UNREPORTED[code])
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return Outcome(RunStatus.SUCCEEDED, "the process exited with code 0 before the function returned")
        if self.aftercare is not None and self.job_status is None and os.WIFSIGNALED(status):  # the keeper's end
            return Outcome(
                RunStatus.CRASHED,
                f"its keeper was {describe_wait_status(status)} before the job finished (the job died with it)",
            )
        return Outcome(RunStatus.CRASHED, describe_wait_status(status) + " before the job finished")

    # -- a keeper's hand-over ----------------------------------------------

    def hand_over(self, now: float, running_for: float) -> bool:
        """Have the keeper carry the run to its end without the host; True once it has said it does.
        A run without a keeper, not started yet, or ended already stays the host's."""
        self._check_released(now)
        if self._orders is None or self.prepared or self.wait_status is not None or self.job_status is not None:
            return False
        report = next((fd for fd, (name, _) in self._streams.items() if name == "report"), None)
        if report is None:
            return False
        order = HandOver(
            {name: splitter.held() for name, splitter in self._streams.values() if splitter is not None},
            self._control,
            self.result,
            running_for,
            None if self.forced is not None or self.deadline is None else self.deadline - now,
            None if self.kill_at is None else self.kill_at - now,
            self.forced,
            time.monotonic() + ANSWER_WAIT - ANSWER_MARGIN,
        )
        try:
            os.write(self._orders, order.encode())
        except OSError:  # the keeper is gone: the host watches the run end, as any other
            return False
        waiting = select.poll()
        waiting.register(report, select.POLLIN)
        answer_by = order.take_by + ANSWER_MARGIN
        while not self.handed and self.job_status is None:
            left = answer_by - time.monotonic()
            if not waiting.poll(max(0.0, left) * 1000):
                break  # (past the instant, one look that does not wait: an answer just in)
            try:
                data = os.read(report, READ_SIZE)
            except BlockingIOError:
                continue
            if not data:  # the keeper exited; what it said before is read, the end of file again later
                break
            self._read_report(data)
            if left <= 0:
                break
        return self.handed

    def go_on_alone(
        self, job: int, pidfd: int | None, status: int | None, read_ends: dict[int, str], order: HandOver, now: float
    ) -> None:
        """In the keeper: take the run over from where the host let go (`order`), the job being `job`."""
        self._alone = True
        self.pid, self.pidfd, self.wait_status = job, pidfd, status
        self._streams = {}
        for fd, name in read_ends.items():
            os.set_blocking(fd, False)
            splitter = None if name == "control" else LineSplitter()
            if splitter is not None and name in order.held:
                splitter.resume(*order.held[name])
            self._streams[fd] = (name, splitter)
        self._control, self.result, self.forced = order.control, order.result, order.forced
        self.deadline = None if order.deadline_in is None else now + order.deadline_in
        self.kill_at = None if order.kill_in is None or status is not None else now + order.kill_in
        self.drain_until = None if status is None else now + DRAIN_GRACE
        self.released, self._look_again, self._go, self._orders, self.on_started = None, None, None, None, None

    # -- internals -------------------------------------------------------

    def _reap(self, now: float) -> None:
        assert self.pid is not None
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid == 0:
            return
        self.wait_status = status
        self.kill_at = None
        if not self._alone:  # the keeper kills its group once the outcome is recorded
            # Whatever the job started and left behind dies with the run.
            self._signal_group(signal.SIGKILL)
        self.drain_until = now + DRAIN_GRACE

    def _signal_group(self, signum: int) -> None:
        if self.pid is None:
            return
        try:
            if self._alone:  # the keeper is in the group: it signals its job
                os.kill(self.pid, signum)
            else:
                os.killpg(self.pid, signum)
        except OSError as exc:
            if exc.errno not in (errno.ESRCH, errno.EPERM):
                raise
            if exc.errno == errno.ESRCH and signum == signal.SIGKILL and self.wait_status is None:
                with contextlib.suppress(OSError):  # a keeper not in its own group yet: it, and its job with it
                    os.kill(self.pid, signum)

    def _read_report(self, data: bytes) -> None:
        """What a keeper says: it carries the run now, or how the job ended (only it could read that)."""
        self._report += data
        *messages, self._report = self._report.split(b"\n")
        for raw in messages:
            with contextlib.suppress(ValueError):
                message = json.loads(raw)
                if message.get("t") == "carrying":
                    self.handed = True
                elif message.get("t") == "exited":
                    self.job_status = int(message["status"])

    def _read_control(self, data: bytes) -> None:
        self._control += data
        *messages, self._control = self._control.split(b"\n")
        if not data and self._control:
            messages.append(self._control)
            self._control = b""
        for raw in messages:
            try:
                message = json.loads(raw)
            except ValueError:
                self.on_line(self.context, "control", raw.decode("utf-8", "backslashreplace"))
                continue
            kind = message.get("t")
            if kind == "result":
                self.result = message
            elif kind == "not_released":
                self.cancelled = True
                self._look_again = None
            elif message.get("t") == "log":
                self.on_record(self.context, message)

    def _check_released(self, now: float) -> None:
        """Announce a prepared run once its child has been released (it says so in shared memory)."""
        if self.released is not False or self._started is None:
            return
        at = started_at(self._started)
        if at is None:  # not yet; or never, if the child is gone
            self._look_again = None if self.wait_status is not None else now + RELEASE_RECHECK
            return
        self.released = True
        self._look_again = None
        if self.on_started is not None:
            self.on_started(at)

    def _flush_stream(self, fd: int) -> None:
        name, splitter = self._streams[fd]
        if splitter is not None:
            for line in splitter.finish():
                self.on_line(self.context, name, line)

    def _close(self, fd: int) -> None:
        """Forget a stream; the loop closes it (after unregistering it), exactly once: a second
        close could hit a descriptor another thread (Sentry's sender) has opened since."""
        self._streams.pop(fd, None)
