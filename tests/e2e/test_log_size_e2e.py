"""A job logs one huge message through `logging`, for real, in a process and in a thread.

The record reaches the log cut into lines of at most 32 KiB, like printed output,
and the host never holds the message whole: its peak memory stays well below it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Deployment, HostProcess, events

MESSAGE_CHARS = 50 * 1024 * 1024
HUGE = """
    import logging
    from pathlib import Path
    from jobhost import job, every

    @job(every(1).seconds, isolation={isolation!r})
    def huge():
        done = Path({marker!r})
        if not done.exists():  # once: the runs after it show the host going on
            done.touch()
            logging.getLogger("huge").warning("%s", "y" * {chars}, extra={{"size": {chars}, "blob": "z" * {chars}}})
"""


def _peak_rss_kib(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/PID/status")


def _runs_and_growth(host: Callable[..., HostProcess], job: str, runs: int) -> tuple[HostProcess, list[dict], float]:
    """Start the host, wait for `runs` successes of `job`; the records, and how much the host's peak
    memory grew meanwhile (MiB). The host is stopped, cleanly."""
    process = host()
    process.wait_for(lambda rs: any(r.get("event") == "host_started" for r in rs), what="the start")
    before = _peak_rss_kib(process.proc.pid)
    records = process.wait_for(lambda rs: len(events(rs, job, "run_succeeded")) >= runs, what=f"{runs} runs")
    grown_mib = (_peak_rss_kib(process.proc.pid) - before) / 1024
    assert process.stop() == 0
    return process, records, grown_mib


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_a_huge_log_message_is_cut_and_never_held_whole_by_the_host(
    deployment: Deployment, host: Callable[..., HostProcess], isolation: str
) -> None:
    deployment.write(
        "huge", HUGE.format(isolation=isolation, marker=str(deployment.tmp / "logged"), chars=MESSAGE_CHARS)
    )
    process, records, grown_mib = _runs_and_growth(host, "huge", 3)
    parts = [r for r in records if r.get("logger") == "huge"]
    assert parts and all(len(r["message"]) <= 32 * 1024 for r in parts)
    assert {r["message_parts"] for r in parts} == {MESSAGE_CHARS // (32 * 1024)}
    assert {r["size"] for r in parts} == {MESSAGE_CHARS} and {r["level"] for r in parts} == {"WARNING"}
    assert {len(r["blob"]) < 33 * 1024 and "characters cut" in r["blob"] for r in parts} == {True}
    lost = sum(r["lost"] for r in records if r.get("event") == "log_lines_lost")
    assert len(parts) + lost >= MESSAGE_CHARS // (32 * 1024)  # each part written, or counted as lost
    # A thread job makes its strings and its message ("%s" % string) in the host itself;
    # nothing else may come near their size.
    held = 3 * MESSAGE_CHARS / 2**20 if isolation == "thread" else 0
    assert grown_mib < held + 25, f"the host's peak memory grew by {grown_mib:.0f} MiB"
    assert all(len(line) < 72 * 1024 for line in process.lines)  # a piece of the message and the cut blob
    assert all(json.loads(line) for line in process.lines)


RAISES = """
    from pathlib import Path
    from jobhost import job, every

    @job(every(1).seconds)
    def raises():
        done = Path({marker!r})
        if not done.exists():  # once: the runs after it show the host going on
            done.touch()
            raise ValueError("x" * {chars})
"""


def test_a_huge_exception_message_is_cut_in_the_run_and_never_held_whole_by_the_host(
    deployment: Deployment, host: Callable[..., HostProcess]
) -> None:
    deployment.write("raises", RAISES.format(marker=str(deployment.tmp / "raised"), chars=MESSAGE_CHARS))
    process, records, grown_mib = _runs_and_growth(host, "raises", 2)
    failed = events(records, "raises", "run_failed")  # its message, with the reason, in 32 KiB parts
    [record] = [r for r in deployment.history("raises") if r["status"] == "failed"]
    assert record["reason"].startswith("ValueError: xxx") and "characters cut" in record["reason"]
    assert len(record["reason"]) < 33 * 1024 and all(len(r["exc_info"]) < 33 * 1024 for r in failed)
    assert grown_mib < 25, f"the host's peak memory grew by {grown_mib:.0f} MiB"
    # A line holds a part of the message and the reason and the traceback, each cut at 32 KiB.
    assert all(len(line) < 128 * 1024 for line in process.lines)
