"""A run's keeper, with real processes: the host reads the job while it lives; once told to hand
over, the keeper goes on where the host stopped (a half line, a character cut in two) and its
aftercare gets the outcome; a host that dies without the order takes the run with it."""

from __future__ import annotations

import datetime as dt
import json
import os
import select
import signal
import time
from pathlib import Path

import pytest

from jobhost.context import RunContext
from jobhost.definition.registry import Registry
from jobhost.outcomes import Outcome, RunStatus
from jobhost.output import LineSplitter
from jobhost.runs.keeper import HandOver
from jobhost.runs.process import ProcessRun

SLOT = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)


class FileAftercare:
    """Writes what the keeper tells it into a file the test reads (it runs in the keeper)."""

    renew_every = None

    def __init__(self, path: Path, successor: bool, stop_grace: float = 30.0):
        self.path = path
        self.has_successor = successor
        self.stop_grace = stop_grace
        self.lines: list[tuple[str, str]] = []

    def begin(self) -> None:
        self._write({"began": os.getpid()})

    def handing_host_runs(self) -> bool:
        return False  # the test is the host; it lets go of the run at once

    def successor(self) -> bool:
        return self.has_successor

    def renew(self) -> bool:
        return True

    def cancelled(self) -> Outcome | None:
        return None

    def settle(self, outcome: Outcome, duration_ms: int) -> None:
        self._write({"status": str(outcome.status), "reason": outcome.reason, "lines": self.lines})

    def _write(self, data: dict) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps(data) + "\n")


def _spec(func, timeout: str = "1m"):
    registry = Registry(default_zone=dt.UTC)
    registry.job(registry.every(1).hours, timeout=timeout)(func)
    registry.validate()
    return next(iter(registry.jobs.values()))


def _run(func, aftercare: FileAftercare) -> ProcessRun:
    """The run of `func` with a keeper; its lines go to `aftercare.lines`: the host's own while the
    host reads them, the keeper's copy (empty at the fork) once the keeper does."""
    spec = _spec(func)
    run = ProcessRun(
        spec,
        RunContext(spec.name, "r1", SLOT, 1),
        lambda ctx, stream, text: aftercare.lines.append((stream, text)),
        lambda ctx, record: None,
        aftercare=aftercare,
    )
    run.start(time.monotonic())
    return run


def _going(tmp_path: Path, *, successor: bool, stop_grace: float = 30.0) -> tuple[ProcessRun, FileAftercare]:
    """A kept run whose job has said it is going and then sleeps, its first line read by the host."""
    aftercare = FileAftercare(tmp_path / "kept.jsonl", successor, stop_grace)

    def job() -> None:
        print("going", flush=True)
        time.sleep(60)

    run = _run(job, aftercare)
    _watch_until(run, lambda: aftercare.lines == [("stdout", "going")])
    return run, aftercare


def _watch_until(run: ProcessRun, until, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        poller = select.poll()
        for fd in run.fds():
            poller.register(fd, select.POLLIN)
        for fd, _ in poller.poll(100):
            run.on_readable(fd, time.monotonic())
        run.poll(time.monotonic())
    assert until(), "waited too long"


def _settled(path: Path, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                if "status" in json.loads(line):
                    return json.loads(line)
        time.sleep(0.05)
    pytest.fail(f"the keeper recorded nothing in {path}")


def test_the_keeper_goes_on_where_the_host_let_go_and_settles_the_run(tmp_path: Path) -> None:
    go = tmp_path / "go"
    aftercare = FileAftercare(tmp_path / "kept.jsonl", successor=True)

    def job() -> None:
        out = os.fdopen(1, "wb", buffering=0, closefd=False)
        out.write(b"first line\nsecond, begun by the host" + "é".encode()[:1])  # a character cut in two
        while not go.exists():
            time.sleep(0.01)
        out.write("é".encode()[1:] + b" and ended under the keeper\nlast\n")

    run = _run(job, aftercare)
    host_lines = aftercare.lines
    _watch_until(run, lambda: host_lines == [("stdout", "first line")] and _held(run))
    assert run.hand_over(time.monotonic(), 0.5)
    for fd in [*run.fds(), *run.held_fds()]:  # the host lets go, as the runner does
        os.close(fd)
    go.write_text("")
    settled = _settled(aftercare.path)
    assert settled["status"] == "succeeded", settled
    assert [tuple(line) for line in settled["lines"]] == [
        ("stdout", "second, begun by the host\u00e9 and ended under the keeper"),
        ("stdout", "last"),
    ]
    assert host_lines == [("stdout", "first line")]  # nothing twice
    _reaped(run)


def _held(run: ProcessRun) -> bool:
    held = [splitter.held() for _, splitter in run._streams.values() if splitter is not None]
    return ("second, begun by the host", "é".encode()[:1]) in held


def _reaped(run: ProcessRun) -> None:
    assert run.pid is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pid, _ = os.waitpid(run.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.02)
    with pytest.raises(ProcessLookupError):
        os.killpg(run.pid, 0)  # the keeper killed its group: nothing of the run is left


def test_without_a_successor_the_keeper_stops_the_run_after_the_grace(tmp_path: Path) -> None:
    run, aftercare = _going(tmp_path, successor=False, stop_grace=0.5)
    assert run.hand_over(time.monotonic(), 0.1)
    for fd in [*run.fds(), *run.held_fds()]:
        os.close(fd)
    settled = _settled(aftercare.path)
    assert settled["status"] == "interrupted" and "none started after it" in settled["reason"]
    _reaped(run)


def test_a_run_that_ended_before_the_order_stays_the_hosts(tmp_path: Path) -> None:
    aftercare = FileAftercare(tmp_path / "kept.jsonl", successor=True)

    def job() -> None:
        print("done", flush=True)

    run = _run(job, aftercare)
    host_lines = aftercare.lines
    _watch_until(run, lambda: run.job_status is not None or run.wait_status is not None)
    assert not run.hand_over(time.monotonic(), 0.1)
    _watch_until(run, lambda: run.done)
    assert run.outcome().status == RunStatus.SUCCEEDED
    assert host_lines == [("stdout", "done")]
    assert not aftercare.path.exists()


def test_the_host_signals_the_job_through_the_keepers_group(tmp_path: Path) -> None:
    run, _ = _going(tmp_path, successor=True)
    run.stop(Outcome(RunStatus.INTERRUPTED, "stopped by the test"), time.monotonic())
    _watch_until(run, lambda: run.done)
    outcome = run.outcome()
    assert outcome.status == RunStatus.INTERRUPTED and "Terminated" in (outcome.traceback or "")


def test_a_keeper_whose_host_is_gone_without_an_order_kills_the_run(tmp_path: Path) -> None:
    """The host's end of the orders pipe closing is the host's death to the keeper."""
    run, aftercare = _going(tmp_path, successor=True)
    for fd in run.held_fds():
        os.close(fd)
    run._orders = None
    _watch_until(run, lambda: run.done)
    assert run.wait_status is not None and os.WIFSIGNALED(run.wait_status)
    assert os.WTERMSIG(run.wait_status) == signal.SIGKILL
    assert not aftercare.path.exists()


def test_a_half_line_and_a_cut_character_cross_to_another_splitter() -> None:
    first = LineSplitter()
    assert first.feed(b"one\ntwo " + "é".encode()[:1]) == ["one"]
    second = LineSplitter()
    second.resume(*first.held())
    assert second.feed("é".encode()[1:] + b"!\n") == ["two é!"]


def test_a_hand_over_order_reads_back_as_it_was_written() -> None:
    order = HandOver(
        {"stdout": ("half", b"\xc3"), "stderr": ("", b"")},
        b'{"t": "lo',
        {"t": "result", "ok": True},
        12.5,
        30.0,
        None,
        Outcome(RunStatus.TIMED_OUT, "past its timeout"),
        1234.5,
    )
    assert HandOver.decode(order.encode().rstrip(b"\n")) == order


def test_a_keeper_too_slow_to_answer_leaves_the_run_the_hosts(tmp_path: Path) -> None:
    """An order the host gave up waiting for is stale: one owner of the run, never two."""
    run, aftercare = _going(tmp_path, successor=True)
    assert run.pid is not None
    os.kill(run.pid, signal.SIGSTOP)  # the keeper cannot answer (a loaded machine, swap)
    try:
        assert not run.hand_over(time.monotonic(), 0.1)
    finally:
        os.kill(run.pid, signal.SIGCONT)
    run.stop(Outcome(RunStatus.INTERRUPTED, "the host stopped it"), time.monotonic())
    _watch_until(run, lambda: run.done)
    assert run.outcome().status == RunStatus.INTERRUPTED and not run.handed
    assert not aftercare.path.exists()  # the keeper never carried it


def test_a_keeper_killed_while_the_host_lives_ends_the_run_saying_so(tmp_path: Path) -> None:
    run, _ = _going(tmp_path, successor=True)
    assert run.pid is not None
    os.kill(run.pid, signal.SIGKILL)  # the keeper alone (the OOM killer's choice); its job dies with it
    _watch_until(run, lambda: run.done)
    outcome = run.outcome()
    assert outcome.status == RunStatus.CRASHED
    assert outcome.reason.startswith("its keeper was killed by SIGKILL"), outcome.reason
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the job went with its keeper (PR_SET_PDEATHSIG), and its group
        try:
            os.killpg(run.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    with pytest.raises(ProcessLookupError):
        os.killpg(run.pid, 0)


def test_what_a_kept_job_runs_does_not_ignore_the_stop_signals_its_keeper_ignores(tmp_path: Path) -> None:
    aftercare = FileAftercare(tmp_path / "kept.jsonl", successor=True)

    def job() -> None:
        import subprocess

        child = subprocess.Popen(["sleep", "30"])
        ignored = next(line for line in Path(f"/proc/{child.pid}/status").read_text().splitlines() if "SigIgn" in line)
        child.kill()
        print(ignored, flush=True)

    run = _run(job, aftercare)
    _watch_until(run, lambda: run.done)
    [(_, line)] = aftercare.lines
    mask = int(line.split()[1], 16)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        assert not mask & (1 << (signum - 1)), f"{signum.name} ignored by what the job ran: {line}"
