"""The jobs' data directory (JOBS_DATA_DIR): made by the host, given to the jobs that take `data_dir`
in both isolations and in `run`, and refused, naming it, when the jobs could not write in it."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobhost.definition.registry import Registry
from tests.conftest import Deployment, events, require

WRITERS = """
import os
from pathlib import Path
from jobhost import job, every

def _write(data_dir: Path, name: str) -> None:
    (data_dir / f"{name}.json").write_text(f'{{"dir": "{data_dir}", "pid": {os.getpid()}}}')

@job(every(1).seconds)
def in_a_process(data_dir: Path):
    _write(data_dir, "in_a_process")

@job(every(1).seconds, isolation="thread")
def in_a_thread(data_dir):
    _write(data_dir, "in_a_thread")

@job(every(1).hours)
def by_hand(slot, data_dir):
    (data_dir / "by_hand.txt").write_text(slot.isoformat())
"""


def test_a_job_that_takes_data_dir_is_marked_so() -> None:
    registry = Registry()

    @registry.job(registry.every().hour)
    def keeps_files(data_dir, limit=3): ...

    @registry.job(registry.every().hour)
    def plain(): ...

    assert registry.jobs["keeps_files"].wants_data_dir and not registry.jobs["keeps_files"].wants_slot
    assert not registry.jobs["plain"].wants_data_dir


def test_the_host_makes_the_data_dir_and_both_isolations_write_in_it(deployment: Deployment, host) -> None:
    deployment.write("writers", WRITERS)
    data_dir = deployment.tmp / "not" / "made" / "yet"
    process = host(JOBS_DATA_DIR=str(data_dir))
    process.wait_for(
        lambda rs: events(rs, "in_a_process", "run_succeeded") and events(rs, "in_a_thread", "run_succeeded"),
        what="a run of each job to succeed",
    )
    assert process.stop() == 0
    in_a_process = json.loads((data_dir / "in_a_process.json").read_text())
    in_a_thread = json.loads((data_dir / "in_a_thread.json").read_text())
    assert in_a_process["dir"] == in_a_thread["dir"] == str(data_dir)
    assert in_a_thread["pid"] == process.proc.pid != in_a_process["pid"]  # the thread ran in the host itself


def test_run_by_hand_gives_the_data_dir_too(deployment: Deployment) -> None:
    deployment.write("writers", WRITERS)
    done = deployment.cli("run", "by_hand", "--slot", "2026-03-01T10:00")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (deployment.tmp / "data" / "by_hand.txt").read_text().startswith("2026-03-01T10:00:00")


@contextlib.contextmanager
def _unwritable(directory: Path) -> Iterator[None]:
    """A directory no file can be made in, for real: read-only to a user, immutable to root."""
    directory.mkdir(parents=True)
    if os.geteuid() != 0:
        directory.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            yield
        finally:
            directory.chmod(stat.S_IRWXU)
        return
    made = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, text=True, check=False)
    require("an immutable directory", made.returncode == 0, f"chattr +i failed: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


def test_check_refuses_a_data_dir_the_jobs_cannot_write_in(deployment: Deployment) -> None:
    deployment.write("writers", WRITERS)
    data_dir = deployment.tmp / "read-only"
    with _unwritable(data_dir):
        refused = deployment.cli("check", JOBS_DATA_DIR=str(data_dir))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "JOBS_DATA_DIR" in refused.stderr and f"cannot write in their data directory {data_dir}" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert deployment.cli("check").returncode == 0  # the default of the deployment: made, and written


@pytest.mark.parametrize("kind", ["under a file", "a file"])
def test_a_data_dir_that_cannot_be_made_is_refused_by_check_run_and_the_loop(deployment: Deployment, kind) -> None:
    deployment.write("writers", WRITERS)
    blocker = deployment.tmp / "a-file"
    blocker.write_text("not a directory\n")
    data_dir = blocker / "data" if kind == "under a file" else blocker
    env = {"JOBS_DATA_DIR": str(data_dir)}
    for command in (["check"], ["run", "by_hand"], []):
        refused = deployment.cli(*command, **env)
        said = refused.stderr + refused.stdout
        assert refused.returncode == 2, said
        assert "JOBS_DATA_DIR" in said and str(data_dir) in said, said
    health = deployment.cli("health", **env)  # the loop said why it refused to start
    assert health.returncode == 1 and "refused to start" in health.stdout and str(data_dir) in health.stdout
