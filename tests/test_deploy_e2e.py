"""End to end: the real `ansible-playbook deploy.yml` against a freshly made Debian
bookworm host booted with systemd-nspawn, its log shipped by rsyslog to a TCP
listener standing in for Logstash (`tcp { codec => json_lines }`)."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, require
from tests.debian_host import ANSIBLE, DebianHost
from tests.deploy_site import (
    SECRET,
    Controller,
    Logstash,
    deploy_site,
    get,
    log_files,
    log_lines,
    pings,
    program,
    recap,
)
from tests.sentry_servers import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DebianHost, Controller, list[Logstash]]]:
    with deploy_site(tmp_path_factory) as built:
        yield built


def test_first_deploy_runs_the_jobs_as_the_job_user_and_ships_every_line(site):
    host, controller, logstash = site
    state, pid = program(host)
    assert state == "RUNNING"
    uid = re.search(r"^Uid:\s+(\d+)", host.run(f"cat /proc/{pid}/status").stdout, re.M).group(1)
    assert host.run(f"getent passwd {uid}").stdout.split(":")[0] == "jobhost"
    assert host.run("getent passwd jobhost").stdout.strip().endswith(":/usr/sbin/nologin")

    wait_until(lambda: pings(log_lines(host)), timeout=30, what="a run of the ping job in the log")
    written = log_lines(host)
    wait_until(lambda: len(logstash[0].received()) >= len(written), timeout=30, what="the lines at Logstash")
    assert logstash[0].received()[: len(written)] == written  # byte for byte, in order

    mode = host.run("stat -c '%a %U' /etc/jobhost/jobs.env").stdout.split()
    assert mode == ["600", "jobhost"]
    assert SECRET in host.read("/etc/jobhost/jobs.env")
    commands = host.run("cat /proc/[0-9]*/cmdline | tr '\\0' ' '", check=False).stdout
    assert "jobs.py" in commands and SECRET not in commands
    assert SECRET not in host.read("/etc/supervisor/conf.d/jobs.conf")
    assert SECRET not in controller.first_output
    assert (
        host.run("cat /opt/jobhost/current/REVISION").stdout.strip()
        == (host.run("readlink /opt/jobhost/current").stdout.strip().rsplit("/", 1)[1])
    )


def test_the_inventory_turns_the_status_page_and_api_on(site):
    host, controller, _ = site
    address = re.search(r"jobhost_http_addr=(\S+)", controller.inventory.read_text()).group(1)
    assert f"JOBS_HTTP_ADDR={json.dumps(address)}" in host.read("/etc/jobhost/jobs.env")
    health = wait_until(lambda: get(f"http://{address}/healthz"), timeout=30, what="/healthz to answer 200")
    assert json.loads(health)["healthy"] is True
    assert "ping" in [job["name"] for job in json.loads(get(f"http://{address}/api/jobs"))]
    assert b"jobhost_runs_total" in get(f"http://{address}/metrics")
    # The vault's token opens the write endpoints; without it they stay shut.
    asked = urllib.request.Request(f"http://{address}/api/jobs/ping/run", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(asked, timeout=10)
    assert refused.value.code == 401
    asked.add_header("Authorization", f"Bearer {SECRET}")
    with urllib.request.urlopen(asked, timeout=10) as answer:
        assert answer.status == 202


def test_a_second_deploy_with_no_change_changes_nothing(site):
    host, controller, _ = site
    _, pid = program(host)
    again = controller.deploy()
    assert again.returncode == 0, again.stdout[-4000:]
    assert recap(again.stdout)["changed"] == 0, again.stdout[-4000:]
    assert program(host) == ("RUNNING", pid)


def test_a_deploy_repairs_a_program_that_is_not_running(site):
    host, controller, _ = site
    host.run("supervisorctl stop jobs")
    repaired = controller.deploy()
    assert repaired.returncode == 0, repaired.stdout[-4000:]
    assert program(host)[0] == "RUNNING"


def test_lines_written_while_logstash_is_down_arrive_when_it_is_back_in_order(site):
    host, _, logstash = site
    port = logstash[0].port
    logstash[0].close()
    before = len(log_lines(host))
    wait_until(lambda: len(pings(log_lines(host)[before:])) >= 3, timeout=30, what="3 pings while Logstash is down")
    logstash.append(Logstash(port))
    written = log_lines(host)
    wait_until(lambda: len(logstash[-1].received()) >= 1, timeout=60, what="rsyslog to reconnect")
    wait_until(
        lambda: set(written) <= set(logstash[0].received() + logstash[-1].received()),
        timeout=60,
        what="every line written meanwhile",
    )
    everything = logstash[0].received() + logstash[-1].received()
    delivered = [line for line in everything if line in set(written)]
    # At a broken connection plain TCP can lose the line in flight, never reorder.
    assert sorted(delivered, key=written.index) == delivered
    assert set(written[before:]) <= set(delivered)


def test_rsyslog_follows_the_rotated_log_and_ships_each_line_once(site):
    host, _, logstash = site
    rotations = len(log_files(host))
    wait_until(lambda: len(log_files(host)) >= rotations + 2, timeout=90, what="two more rotations of the log")
    written = log_lines(host)
    received = logstash[-1].received()
    wait_until(lambda: len(logstash[-1].received()) >= len(received) + 5, timeout=30, what="lines after rotation")
    received = logstash[-1].received()
    # Plain TCP has no acknowledgements: the line in flight when this listener took over may come
    # twice (rsyslog sends it again on the new connection). From then on, each line once.
    while len(received) > 1 and received[1] == received[0]:
        received = received[1:]
    start = written.index(received[0])  # the first line this listener got
    assert received[: len(written) - start] == written[start:]  # each line once, in order, across files


def test_a_release_that_fails_its_check_never_replaces_the_running_one(site):
    host, controller, _ = site
    running = host.run("readlink /opt/jobhost/current").stdout.strip()
    state, pid = program(host)
    (controller.dir / "jobs" / "broken.py").write_text(
        'from jobhost import job, cron\n\n\n@job(cron("61 * * * *"))\ndef every_sixty_first_minute():\n    pass\n'
    )
    revision = controller.commit("a broken job")
    try:
        failed = controller.deploy()
        assert failed.returncode != 0
        assert "jobs/broken.py:4: job 'every_sixty_first_minute': cron('61 * * * *')" in failed.stdout
        assert host.run("readlink /opt/jobhost/current").stdout.strip() == running
        assert not (host.dir / f"opt/jobhost/releases/{revision}").exists()
        assert program(host) == (state, pid)
        before = len(pings(log_lines(host)))
        wait_until(lambda: len(pings(log_lines(host))) > before, timeout=30, what="the old release still running")
    finally:
        (controller.dir / "jobs" / "broken.py").unlink()
        controller.commit("remove the broken job")


def test_a_release_that_does_not_come_up_is_rolled_back(site):
    host, controller, _ = site
    assert controller.deploy().returncode == 0  # the fixed release (same code, a new commit)
    running = host.run("readlink /opt/jobhost/current").stdout.strip()
    # Imports in `check`, but the loop dies at start: something only the running host meets.
    (controller.dir / "jobs" / "needs_config.py").write_text(
        "import sys\n\nif sys.argv[1:2] != ['check']:\n    raise RuntimeError('the partner config is missing')\n"
    )
    controller.commit("a job that cannot start")
    try:
        failed = controller.deploy()
        assert failed.returncode != 0
        assert "did not come up healthy" in failed.stdout and "rolled back to" in failed.stdout
        assert host.run("readlink /opt/jobhost/current").stdout.strip() == running
        wait_until(lambda: program(host)[0] == "RUNNING", timeout=30, what="the previous release running again")
    finally:
        (controller.dir / "jobs" / "needs_config.py").unlink()
        controller.commit("remove the job that cannot start")


def test_the_role_passes_ansible_lint_at_the_production_profile():
    require("ansible-lint", (ANSIBLE / "bin" / "ansible-lint").exists(), "./dev test installs it")
    linted = subprocess.run(
        [str(ANSIBLE / "bin" / "ansible-lint"), "--profile", "production", "ansible/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": f"{ANSIBLE / 'bin'}:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"},
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
