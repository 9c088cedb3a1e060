"""End to end, on a Debian host the real `ansible-playbook deploy.yml` set up, its history on a
PostgreSQL server (as several hosts share one): the example jobs write where the job user may (the
data directory the role makes), the host keeps its own files in the job user's directory, not in the
root-owned release, and every face of the host names the release the deploy put there."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from tests.support.debian_host import DebianHost
from tests.support.deploy_site import Controller, Logstash, deploy_site, get, program
from tests.support.sentry_servers import wait_until

pytestmark = pytest.mark.timeout(600)  # a deploy on a busy machine can take minutes

CLI = (
    "cd / && env JOBS_ENV_FILE=/etc/jobhost/jobs.env JOBS_LOG_FORMAT=json runuser -u jobhost -- "
    "/opt/jobhost/current/.venv/bin/python /opt/jobhost/current/jobs.py"
)
DATA = "/var/lib/jobhost/data"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, postgres) -> Iterator[tuple[DebianHost, Controller, list[Logstash]]]:
    # The container shares this machine's network: the test cluster is at 127.0.0.1 for it too.
    with deploy_site(tmp_path_factory, host_vars=f"jobhost_state_url={postgres.new_database()}") as built:
        yield built


def test_on_postgresql_the_host_keeps_its_status_and_run_outcomes_in_the_job_users_directory(site):
    host, _, _ = site
    assert 'JOBS_HOST_DIR="/var/lib/jobhost"' in host.read("/etc/jobhost/jobs.env").splitlines()
    wait_until(lambda: host.run(f"{CLI} health", check=False).returncode == 0, timeout=60, what="the loop healthy")
    kept = host.run("ls /var/lib/jobhost").stdout.split()
    assert any(name.endswith(".status") for name in kept) and "jobhost.runs" in kept, kept
    assert not host.run("ls -d /opt/jobhost/current/var", check=False).stdout.strip()


def test_the_role_makes_the_job_users_data_directory_and_names_it_in_the_settings(site):
    host, _, _ = site
    assert host.run(f"stat -c '%a %U %G' {DATA}").stdout.split() == ["750", "jobhost", "jobhost"]
    assert f'JOBS_DATA_DIR="{DATA}"' in host.read("/etc/jobhost/jobs.env").splitlines()


@pytest.mark.parametrize("name", ["check_disk_space", "write_daily_partition"])
def test_the_example_jobs_succeed_on_the_host_and_write_into_the_data_directory(site, name):
    host, _, _ = site
    done = host.run(f"{CLI} run {name} --slot 2026-03-02T01:00", check=False)
    said = done.stdout[-3000:] + done.stderr[-2000:]
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    ends = [r["event"] for r in records if r.get("job") == name and r.get("event") in ("run_succeeded", "run_failed")]
    assert (done.returncode, ends) == (0, ["run_succeeded"]), said
    if name == "write_daily_partition":
        written = f"{DATA}/exports/partition-2026-03-01.json"
        assert host.run(f"stat -c %U {written}").stdout.strip() == "jobhost"
        assert json.loads(host.read(written))["day"] == "2026-03-01"
    else:
        usage = next(r for r in records if r.get("message") == "disk space")
        assert usage["free_bytes"] > 0


def test_the_deployed_release_is_what_list_healthz_metrics_and_the_page_name(site):
    host, controller, _ = site
    revision = host.run("cat /opt/jobhost/current/REVISION").stdout.strip()  # (current links inside the host)
    _, pid = program(host)
    address = re.search(r"jobhost_http_addr=(\S+)", controller.inventory.read_text()).group(1)
    health = json.loads(wait_until(lambda: get(f"http://{address}/healthz"), timeout=30, what="/healthz"))
    assert health["release"] == revision
    metrics = (get(f"http://{address}/metrics") or b"").decode()
    assert re.search(rf'^jobhost_build_info{{python="[0-9.]+",release="{revision}"}} 1\.0$', metrics, re.M), metrics
    assert f"release <code>{revision[:12]}</code>, up since" in get(f"http://{address}/").decode()
    listed = host.run(f"{CLI} list").stdout.splitlines()[0]
    assert listed.startswith(f"release {revision[:12]} (this checkout), run by the loop (pid {pid}) since ")
