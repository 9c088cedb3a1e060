"""End to end: a real host writing records of about 240 KB to JOBS_LOG_FILE, rotated small.

Every line is whole JSON, each once and in order across jobs.log.N ... jobs.log; the
runs the host forks never hold the file; the commands a person runs print to stdout.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Deployment, HostProcess
from tests.support.sentry_servers import wait_until

PART = 30_000  # characters of each field: under the 32 KiB a field keeps whole
BIG = f"""
import logging
import os
from jobhost import job, every

count = 0

@job(every(1).seconds, isolation="thread")
def numbered():
    global count
    count += 1  # a thread job runs in the host: its count goes on from run to run
    fields = {{f"part_{{i}}": str(i) * {PART} for i in range(7)}}
    logging.getLogger("big").info("%d %s", count, "m" * {PART}, extra={{"n": count, **fields}})

@job(every(1).seconds)
def descriptors():
    print("fds", sorted(os.readlink(f"/proc/self/fd/{{n}}") for n in os.listdir("/proc/self/fd")
                          if os.path.exists(f"/proc/self/fd/{{n}}")))
"""
MAX_BYTES = 600 * 1024


def _files(log: Path) -> list[Path]:
    backups = sorted(log.parent.glob(log.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    return [*backups, log]


def _records(log: Path) -> list[dict]:
    """Every line of every file, oldest first; a line that is not whole JSON fails here."""
    records = []
    for file in _files(log):
        for raw in file.read_bytes().splitlines(keepends=True):
            assert raw.endswith(b"\n")
            records.append(json.loads(raw))
    return records


def test_records_of_240_kb_cross_the_hosts_own_rotations_whole_once_and_in_order(deployment: Deployment, host) -> None:
    deployment.write("big", BIG)
    log = deployment.tmp / "logs" / "jobs.log"
    log.parent.mkdir()
    env = {"JOBS_LOG_FILE": str(log), "JOBS_LOG_MAX_BYTES": "600KB", "JOBS_LOG_BACKUPS": "100"}
    process: HostProcess = host(**env)
    wait_until(lambda: len(_files(log)) >= 8, timeout=60, what="seven rotations of the host's log")
    assert process.stop() == 0
    assert process.lines == []  # the log went to the file, not to stdout

    records = _records(log)
    assert records[0]["event"] == "host_started" and records[-1]["event"] == "host_stopped"
    big = [r for r in records if r["logger"] == "big"]
    assert len(big) >= 12
    assert [r["n"] for r in big] == list(range(1, len(big) + 1))  # each once, in order
    for record in big:
        assert all(record[f"part_{i}"] == str(i) * PART for i in range(7))
    lengths = [len(raw) for file in _files(log) for raw in file.read_bytes().splitlines() if b'"logger": "big"' in raw]
    assert min(lengths) > 240_000
    for file in _files(log):  # rotated before it would pass its size, a line never cut for it
        assert file.stat().st_size <= MAX_BYTES

    opened = [r["message"] for r in records if r.get("job") == "descriptors" and r["message"].startswith("fds")]
    assert opened and not any(str(log.parent) in message for message in opened)  # runs never hold the log


def test_a_command_prints_its_log_to_stdout_and_leaves_the_file_alone(deployment: Deployment) -> None:
    deployment.write("big", BIG)
    log = deployment.tmp / "logs" / "jobs.log"
    log.parent.mkdir()
    done = deployment.cli("run", "descriptors", JOBS_LOG_FILE=str(log))
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["event"] for line in done.stdout.splitlines() if '"event"' in line][-1] == "run_succeeded"
    assert not log.exists()


SEGFAULT = """
import ctypes
from jobhost import job, every


@job(every(1).seconds, isolation="thread")
def crashes_the_host():
    ctypes.string_at(0)  # a segfault, in the host's own process
"""


def test_a_host_that_segfaults_leaves_its_traceback_on_stderr_not_in_the_json_log(deployment: Deployment, host) -> None:
    deployment.write("crash", SEGFAULT)
    log = deployment.tmp / "logs" / "jobs.log"
    log.parent.mkdir()
    process: HostProcess = host(JOBS_LOG_FILE=str(log))
    assert process.proc.wait(30) < 0  # killed by its signal
    said = process.proc.stderr.read().decode()
    assert "Fatal Python error: Segmentation fault" in said and "crashes_the_host" in said
    assert _records(log)[0]["event"] == "host_started"  # and only JSON in the log
