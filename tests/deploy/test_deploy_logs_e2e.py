"""End to end: lines of 200 to 256 KB from a deployed host cross its log rotation whole.

supervisord rotated its file after whatever chunk it had read from the program's
pipe (64 KiB), so a longer line could be cut in two by a rotation and reach
Logstash as two invalid halves. The host now writes and rotates its log itself,
between lines: at the Logstash stand-in every line is valid JSON, and every long
record arrives whole, once, in order, as the host wrote it.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator

import pytest

from tests.support.debian_host import DebianHost
from tests.support.deploy_site import Controller, Logstash, deploy_site, log_files, log_lines
from tests.support.sentry_servers import wait_until

# The first deploy, from bare Debian, takes 40 s on an idle machine and over 2 min on a busy one.
pytestmark = pytest.mark.timeout(600)

PART = 30_000  # characters a field: each under the 32 KiB that a field keeps whole
LONG_LINES = f"""
import logging
from jobhost import job, every


@job(every(1).seconds)
def long_lines(slot):
    # 6 to 8 fields of {PART} characters: a record of about 190 to 250 KB, one line of the log.
    fields = {{f"part_{{i}}": str(i) * {PART} for i in range(6 + slot.second % 3)}}
    logging.getLogger("long").info("%s", "m" * 10_000, extra=fields)
"""
ROTATE_AT = 1024 * 1024  # jobhost_log_max_bytes: a rotation every 4 or 5 lines


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DebianHost, Controller, list[Logstash]]]:
    variables = "jobhost_log_max_bytes=1MB jobhost_log_backups=100"
    with deploy_site(tmp_path_factory, host_vars=variables, jobs={"long_lines": LONG_LINES}) as built:
        yield built


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:  # a part of a line: cut JSON, or digits too many for an int
        return False
    return True


def _long(lines: list[bytes]) -> list[bytes]:
    return [line for line in lines if b'"logger": "long"' in line]


def test_lines_of_200_to_256_kb_reach_logstash_whole_once_and_in_order_across_rotations(site) -> None:
    host, _, logstash = site
    rotations = len(log_files(host))
    wait_until(lambda: len(log_files(host)) >= rotations + 6, timeout=120, what="six more rotations of the log")
    written = log_lines(host)
    wait_until(
        lambda: set(_long(written)) <= set(logstash[0].received()), timeout=60, what="the long lines at Logstash"
    )
    received = logstash[0].received()
    halves = [f"{len(line)} bytes: {line[:40]!r}...{line[-40:]!r}" for line in received if not _is_json(line)]
    assert halves == [], f"{len(halves)} of {len(received)} lines at Logstash are not JSON (parts of lines)"
    long = [r for r in map(json.loads, received) if r["logger"] == "long"]
    assert len(long) >= 20
    for record in long:
        parts = [key for key in record if key.startswith("part_")]
        assert 6 <= len(parts) <= 8 and all(record[key] == key[-1] * PART for key in parts)
    slots = [r["slot"] for r in long]
    assert slots == sorted(set(slots))  # each once, in order
    assert _long(received)[: len(_long(written))] == _long(written)  # as the host wrote them, byte for byte
    sizes = [len(line) for line in _long(written)]
    assert min(sizes) > 185_000 and max(sizes) < 256 * 1024  # rsyslog's jobhost_log_max_line
    for path in log_files(host):  # each file rotated before it would pass the maximum
        assert path.stat().st_size <= ROTATE_AT


def test_the_log_is_the_job_users_and_supervisord_keeps_only_what_is_not_json(site) -> None:
    host, _, _ = site
    owner = host.run("stat -c '%U %G %a' /var/log/jobhost /var/log/jobhost/jobs.log").stdout.split("\n")
    assert owner[:2] == ["jobhost adm 2750", "jobhost adm 640"]
    env = host.read("/etc/jobhost/jobs.env")
    assert 'JOBS_LOG_FILE="/var/log/jobhost/jobs.log"' in env and 'JOBS_LOG_MAX_BYTES="1MB"' in env
    assert "stdout_logfile=/var/log/jobhost/jobs.stdout.log" in host.read("/etc/supervisor/conf.d/jobs.conf")
    assert host.read("/var/log/jobhost/jobs.stdout.log") == ""  # the host logged everything as JSON


def test_what_the_host_could_not_log_as_json_is_shipped_as_json_too(site) -> None:
    host, _, logstash = site
    crash = 'Fatal Python error: Segmentation fault, with "quotes" and a \\ in it'
    host.run(f"printf '%s\\n' {shlex.quote(crash)} >> /var/log/jobhost/jobs.stdout.log")
    arrived = wait_until(
        lambda: [json.loads(line) for line in logstash[0].received() if b'"unlogged_output"' in line],
        timeout=60,
        what="the crash line at Logstash",
    )
    [line] = arrived
    assert line["message"] == crash and line["level"] == "ERROR" and line["file"] == "/var/log/jobhost/jobs.stdout.log"
    assert line["timestamp"].startswith("20")
