"""End to end: the real `ansible-playbook deploy.yml` against a freshly made Debian
bookworm host booted with systemd-nspawn, its log shipped by rsyslog to a TCP
listener standing in for Logstash (`tcp { codec => json_lines }`)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, require
from tests.support.debian_host import ANSIBLE, DebianHost
from tests.support.deploy_site import (
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
from tests.support.sentry_servers import wait_until

# A release deploy builds a virtualenv and watches the release for its window: on a loaded
# machine one deploy, or two, outlast the suite's 120 s a test.
pytestmark = pytest.mark.timeout(600)  # a deploy on a busy machine can take minutes

WINDOW = 12
OTHER_PROGRAM = "[program:other]\ncommand=/bin/sleep infinity\n"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DebianHost, Controller, list[Logstash]]]:
    # A window long enough for the crash test's release to die in it (10 s after its start).
    with deploy_site(tmp_path_factory, host_vars=f"jobhost_stability_window={WINDOW}") as built:
        yield built


RESENT_AT_MOST = 16  # lines; rsyslog sends a batch of up to this many lines at once


def first_copies(received: list[bytes]) -> list[bytes]:
    """The lines as Logstash first got them. Plain TCP has no acknowledgements: when a connection
    breaks, rsyslog sends the batch in flight again on the next one, so a few lines may come twice
    (docs/deploy.md says so); no more than one batch, and never out of order."""
    once = list(dict.fromkeys(received))
    assert len(received) - len(once) <= RESENT_AT_MOST, "more lines came twice than one batch in flight"
    return once


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
    running = host.run("readlink /opt/jobhost/current").stdout.strip().rsplit("/", 1)[1]
    assert f"Release {running} runs since " in again.stdout and f"(pid {pid})" in again.stdout
    assert "the release did not change; settings unchanged; restarted: nothing." in again.stdout


def test_a_deploy_repairs_a_program_that_is_not_running(site):
    host, controller, _ = site
    host.run("supervisorctl stop jobs")
    repaired = controller.deploy()
    assert repaired.returncode == 0, repaired.stdout[-4000:]
    assert program(host)[0] == "RUNNING"


def test_a_deploy_applies_a_program_file_an_earlier_play_wrote_but_did_not_apply(site):
    host, controller, _ = site
    conf = "/etc/supervisor/conf.d/jobs.conf"
    # supervisord runs another program file than the one on disk, as after a play that stopped
    # between writing the file and `supervisorctl update jobs`.
    host.run(f"cp {conf} /root/jobs.conf.rendered && sed -i 's/^startretries=.*/startretries=7/' {conf}")
    host.run(f"supervisorctl reread && supervisorctl update jobs && cp /root/jobs.conf.rendered {conf}")
    assert "jobs: changed" in host.run("supervisorctl reread").stdout
    converged = controller.deploy()
    assert converged.returncode == 0, converged.stdout[-4000:]
    assert "jobs: changed" not in host.run("supervisorctl reread").stdout
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
    stream = [line for line in logstash[0].received() + logstash[-1].received() if line in set(written)]
    delivered = first_copies(stream)
    assert sorted(delivered, key=written.index) == delivered  # never out of order
    assert set(written[before:]) <= set(delivered)


def test_rsyslog_follows_the_rotated_log_and_ships_every_line_in_order(site):
    host, _, logstash = site
    rotations = len(log_files(host))
    wait_until(lambda: len(log_files(host)) >= rotations + 2, timeout=90, what="two more rotations of the log")
    written = log_lines(host)
    received = logstash[-1].received()
    wait_until(lambda: len(logstash[-1].received()) >= len(received) + 5, timeout=30, what="lines after rotation")
    received = first_copies(logstash[-1].received())
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


def test_a_release_deploy_starts_our_program_once_and_leaves_other_programs_alone(site):
    host, controller, _ = site
    previous = current(host)
    # Another team's program, with a change to its file that supervisord has not applied yet.
    (host.dir / "etc/supervisor/conf.d/other.conf").write_text(OTHER_PROGRAM)
    host.run("supervisorctl reread && supervisorctl update other")
    wait_until(lambda: other(host)[0] == "RUNNING", timeout=30, what="the other program running")
    state, pid = other(host)
    (host.dir / "etc/supervisor/conf.d/other.conf").write_text(OTHER_PROGRAM + 'environment=CHANGED="1"\n')
    spawned = starts(host)
    (controller.dir / "jobs" / "notes.py").write_text("# a change of code: a new release\n")
    revision = controller.commit("a release")

    deployed = controller.deploy()
    assert deployed.returncode == 0, deployed.stdout[-4000:]
    assert current(host) == revision
    assert other(host) == (state, pid)  # its pending change left pending, the program not restarted
    assert starts(host) == spawned + 1  # ours: one start, of the new release
    assert f"Release {revision} runs since " in deployed.stdout
    assert f"the previous release: {previous}; settings unchanged; restarted: jobs (its program file changed)." in (
        deployed.stdout
    )
    assert host.run("readlink /opt/jobhost/last-good").stdout.strip() == f"/opt/jobhost/releases/{revision}"
    # No copies of the program file pile up: the one kept for a rollback went with success.
    assert sorted(p.name for p in (host.dir / "etc/supervisor/conf.d").iterdir()) == ["jobs.conf", "other.conf"]


def test_the_play_shows_the_plan_and_stops_for_a_person_when_it_would_remove_a_job(site):
    host, controller, _ = site
    job = controller.dir / "jobs" / "for_a_while.py"
    job.write_text("from jobhost import job, every\n\n\n@job(every().day.at('04:00'))\ndef for_a_while():\n    pass\n")
    controller.commit("a job for a while")
    added = controller.deploy()
    assert added.returncode == 0, added.stdout[-4000:]
    assert "plan: 1 added" in added.stdout and "+ for_a_while: added: every day at 04:00" in added.stdout
    running = current(host)
    job.unlink()
    revision = controller.commit("the job goes")
    stopped = controller.deploy("-e", "jobhost_plan_confirm_above=0")
    assert stopped.returncode != 0
    assert re.search(rf"The plan of {revision} runs \d+ catch-up run\(s\) at the next start", stopped.stdout)
    assert "and removes for_a_while; nothing was changed on the host" in stopped.stdout
    assert current(host) == running
    confirmed = controller.deploy("-e", "jobhost_plan_confirm_above=0", "-e", "jobhost_plan_confirmed=true")
    assert confirmed.returncode == 0, confirmed.stdout[-4000:]
    assert current(host) == revision and "- for_a_while: removed" in confirmed.stdout


def test_a_release_that_does_not_come_up_is_rolled_back(site):
    host, controller, _ = site
    running = current(host)
    # Imports in `check`, but the loop dies at start: something only the running host meets.
    (controller.dir / "jobs" / "needs_config.py").write_text(
        "import sys\n\nif sys.argv[1:2] != ['check']:\n    raise RuntimeError('the partner config is missing')\n"
    )
    revision = controller.commit("a job that cannot start")
    try:
        failed = controller.deploy()
        assert failed.returncode != 0
        said = failure(failed)
        assert re.match(rf"Release {revision[:12]} failed \d+ s after its start: the host refused to start ", said), (
            said
        )
        assert "jobs/needs_config.py:4" in said and "the partner config is missing" in said, said
        rolled_back(host, said, revision, running)
    finally:
        (controller.dir / "jobs" / "needs_config.py").unlink()
        controller.commit("remove the job that cannot start")


def test_a_release_that_crashes_after_its_start_is_rolled_back(site):
    host, controller, _ = site
    running = current(host)
    # Healthy at its first heartbeat, dead 10 s after its start: supervisord would start it again
    # and again (each life outlasts startsecs), and a single look would call it healthy.
    (controller.dir / "jobs" / "crashes_later.py").write_text(
        "import os\nimport sys\nimport threading\nimport time\n\n\n"
        "def crash():\n    time.sleep(10)\n    os._exit(1)\n\n\n"
        "if sys.argv[1:2] != ['check']:\n    threading.Thread(target=crash, daemon=True).start()\n"
    )
    revision = controller.commit("a release that crashes 10 s after its start")
    try:
        failed = controller.deploy()
        assert failed.returncode != 0
        said = failure(failed)
        assert re.match(
            rf"Release {revision[:12]} failed \d+ s after its start: unhealthy \d+\.\d s into the {WINDOW}\.0 s window: "
            r"the loop (is gone: pid \d+ .* ended without a clean stop \(crashed or killed\)|restarted \(pid \d+, now \d+\))",
            said,
        ), said
        rolled_back(host, said, revision, running)
        assert host.run(f"readlink /proc/{program(host)[1]}/cwd").stdout.strip() == f"/opt/jobhost/releases/{running}"
    finally:
        (controller.dir / "jobs" / "crashes_later.py").unlink()
        controller.commit("remove the release that crashes")


def test_cleanup_removes_rolled_back_releases_first_and_keeps_the_last_good_one(site):
    host, controller, _ = site
    last_good = current(host)
    releases = host.dir / "opt/jobhost/releases"
    marked = [p.name for p in releases.iterdir() if (p / ".rolled-back").exists()]
    assert len(marked) >= 2  # by the two tests before
    deployed = controller.ansible(
        "ansible-playbook", "-i", str(controller.inventory), "deploy.yml", "-e", "jobhost_keep_releases=2"
    )
    assert deployed.returncode == 0, deployed.stdout[-4000:]
    # Newer by time than the last good release, the rolled-back ones go; it stays.
    assert sorted(p.name for p in releases.iterdir()) == sorted([current(host), last_good])


def test_a_settings_change_that_fails_rolls_back_the_settings_only(site):
    host, controller, _ = site
    running, (_, pid) = current(host), program(host)
    env = host.read("/etc/jobhost/jobs.env")
    taken = socket.create_server(("127.0.0.1", 0))  # a port the host cannot bind: check passes, the start fails
    inventory = controller.inventory.read_text()
    controller.inventory.write_text(
        re.sub(r"jobhost_http_addr=\S+", f"jobhost_http_addr=127.0.0.1:{taken.getsockname()[1]}", inventory)
    )
    try:
        failed = controller.deploy()
        assert failed.returncode != 0
        said = failure(failed)
        assert re.match(
            rf"The new settings of release {running[:12]} failed \d+ s after its start: the host refused to start ",
            said,
        ), said
        assert f"cannot serve HTTP on 127.0.0.1:{taken.getsockname()[1]} (JOBS_HTTP_ADDR)" in said, said
        assert said.endswith(
            f"Rolled back the settings only: release {running[:12]} runs again with its previous settings."
        ), said
        assert host.read("/etc/jobhost/jobs.env") == env
        assert current(host) == running and not (host.dir / f"opt/jobhost/releases/{running}/.rolled-back").exists()
        wait_until(lambda: program(host)[0] == "RUNNING", timeout=30, what="the release running again")
        assert program(host)[1] != pid
    finally:
        controller.inventory.write_text(inventory)
        taken.close()


def test_a_kept_release_is_switched_to_by_name_with_no_checkout(site):
    host, controller, _ = site
    running = current(host)
    kept = next(p.name for p in (host.dir / "opt/jobhost/releases").iterdir() if p.name != running)
    switched = controller.ansible(
        "ansible-playbook", "-i", str(controller.inventory), "deploy.yml", "-e", f"jobhost_release={kept[:10]}"
    )
    assert switched.returncode == 0, switched.stdout[-4000:]
    assert current(host) == kept
    assert host.run(f"readlink /proc/{program(host)[1]}/cwd").stdout.strip() == f"/opt/jobhost/releases/{kept}"
    assert f"Release {kept} runs since " in switched.stdout and f"the previous release: {running};" in switched.stdout

    unknown = controller.ansible(
        "ansible-playbook", "-i", str(controller.inventory), "deploy.yml", "-e", "jobhost_release=0000000"
    )
    assert unknown.returncode != 0
    names = ", ".join(sorted([kept, running]))
    assert f"jobhost_release=0000000 names no complete release on {host.name}; the releases kept there: {names}" in (
        " ".join(unknown.stdout.split())
    )
    assert current(host) == kept


def test_a_play_that_matches_no_host_fails(site):
    _, controller, _ = site
    empty = controller.inventory.parent / "empty.ini"
    empty.write_text("[jobhost]\n")
    missed = controller.ansible("ansible-playbook", "-i", str(empty), "deploy.yml")
    assert missed.returncode != 0
    assert "The play matched no host: nothing was deployed." in missed.stdout, missed.stdout[-3000:]


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


def current(host: DebianHost) -> str:
    """The release current points at."""
    return host.run("readlink /opt/jobhost/current").stdout.strip().rsplit("/", 1)[1]


def other(host: DebianHost) -> tuple[str, int]:
    status = host.run("supervisorctl status other", check=False).stdout.split()
    return status[1], int(status[3].rstrip(",")) if status[1] == "RUNNING" else 0


def starts(host: DebianHost) -> int:
    """How many times supervisord has started our program."""
    return host.read("/var/log/supervisor/supervisord.log").count("spawned: 'jobs' with pid")


def rolled_back(host: DebianHost, said: str, revision: str, running: str) -> None:
    """The play said `running` was restored in place of `revision`, and so it is."""
    assert said.endswith(
        f"Rolled back: release {running[:12]} runs again (current points back at it); "
        f"{revision[:12]} is marked rolled back."
    ), said
    assert current(host) == running
    assert (host.dir / f"opt/jobhost/releases/{revision}/.rolled-back").exists()
    wait_until(lambda: program(host)[0] == "RUNNING", timeout=30, what="the previous release running again")


def failure(played: subprocess.CompletedProcess[str]) -> str:
    """The message the play failed with."""
    found = re.findall(r'FAILED! => \{.*"msg": "((?:[^"\\]|\\.)*)"', played.stdout)
    assert found, played.stdout[-4000:]
    return json.loads(f'"{found[-1]}"')
