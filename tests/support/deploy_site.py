"""The deploy tests' site: a checkout to deploy from (its own git repository), a
Logstash stand-in, and readers of the booted host's program and log. Each deploy
test module boots its own host with `deploy_site(...)`."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, require
from tests.support.debian_host import ANSIBLE, DebianHost, missing

PING = """
from jobhost import job, every


@job(every(2).seconds)
def ping():
    print("ping " + "x" * 20000)  # longer than rsyslog's default 8 KB message
"""
SECRET = f"s3cret-{uuid.uuid4().hex}"
VAULT_PASSWORD = "test-vault-password"


class Logstash:
    """A TCP listener that keeps each newline-terminated line it receives, as bytes."""

    def __init__(self, port: int = 0):
        self.lines: list[bytes] = []
        self._lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.port = self.server.getsockname()[1]
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        buffer = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            *complete, buffer = buffer.split(b"\n")
            with self._lock:
                self.lines.extend(complete)

    def received(self) -> list[bytes]:
        with self._lock:
            return list(self.lines)

    def close(self) -> None:
        """Stop listening for real: shutdown wakes the thread blocked in accept(), which a bare
        close() would leave accepting on the old socket."""
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


class Controller:
    """A checkout of this working tree (its own git repository) to deploy from."""

    def __init__(
        self,
        directory: Path,
        host: DebianHost,
        logstash_port: int,
        host_vars: str = "",
        jobs: dict[str, str] | None = None,
    ):
        self.first_output = ""
        self.dir = directory / "checkout"
        files = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split("\n")
        for name in filter(None, files):
            if (ROOT / name).is_file():
                target = self.dir / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, target)
        (self.dir / "jobs" / "ping.py").write_text(PING)
        for module, source in (jobs or {}).items():
            (self.dir / "jobs" / f"{module}.py").write_text(source)
        self.git("init", "-q")
        self.commit("the release under test, with a job every 2 s")
        inventory = directory / "inventory"
        (inventory / "group_vars" / "jobhost").mkdir(parents=True)
        shutil.copy(ROOT / "ansible/inventory/example/group_vars/jobhost/main.yml", inventory / "group_vars/jobhost/")
        # Host variables, to win over the example's group_vars.
        (inventory / "hosts.ini").write_text(
            f"[jobhost]\n{host.inventory_line()} jobhost_logstash_host=127.0.0.1 "
            f"jobhost_logstash_port={logstash_port} jobhost_start_timeout=20 "
            # Rotation every few seconds (the ping job writes 20 KB lines), so the tests see it.
            "jobhost_log_max_bytes=200KB jobhost_log_backups=50 "
            # The container shares this machine's network: a port of its own, found free.
            f"jobhost_http_addr=127.0.0.1:{free_port()} {host_vars}\n"
        )
        self.password = directory / "vault-password"
        self.password.write_text(VAULT_PASSWORD)
        vault = inventory / "group_vars" / "jobhost" / "vault.yml"
        vault.write_text(
            f"vault_jobhost_http_token: {SECRET}\n"
            "vault_jobhost_secret_environment:\n"
            f"  SENTRY_DSN: http://{SECRET}@127.0.0.1:9/1\n"
            f"  PARTNER_API_TOKEN: {SECRET}\n"
        )
        self.ansible("ansible-vault", "encrypt", str(vault))
        self.inventory = inventory / "hosts.ini"

    def git(self, *args: str) -> None:
        env = {
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
        }
        subprocess.run(
            ["git", *args], cwd=self.dir, check=True, capture_output=True, env={**env, "PATH": "/usr/bin:/bin"}
        )

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=self.dir, capture_output=True, text=True, check=True
        ).stdout.strip()

    def ansible(self, tool: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ANSIBLE / "bin" / tool), "--vault-password-file", str(self.password), *args],
            cwd=self.dir / "ansible",
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": f"{ANSIBLE / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"},
        )

    def deploy(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The play, with more `ansible-playbook` arguments (`-e ...`) if given."""
        return self.ansible("ansible-playbook", "-i", str(self.inventory), "deploy.yml", *args)


def recap(output: str) -> dict[str, int]:
    line = next(line for line in output.splitlines() if " : ok=" in line)
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}


@contextlib.contextmanager
def deploy_site(
    tmp_path_factory: pytest.TempPathFactory, host_vars: str = "", jobs: dict[str, str] | None = None
) -> Iterator[tuple[DebianHost, Controller, list[Logstash]]]:
    """A booted Debian host with the checkout deployed once (the first deploy must pass);
    `host_vars` are more `name=value` inventory variables of the host, `jobs` more job modules
    (module name: source) in the release."""
    reason = missing()
    require("a bootable Debian container with Ansible", reason is None, reason or "")
    directory = tmp_path_factory.mktemp("deploy")
    host = DebianHost(directory, f"jobhost-{uuid.uuid4().hex[:8]}")
    logstash = [Logstash()]
    try:
        controller = Controller(directory, host, logstash[0].port, host_vars, jobs)
        first = controller.deploy()
        assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
        controller.first_output = first.stdout + first.stderr
        yield host, controller, logstash
    finally:
        for listener in logstash:
            listener.close()
        host.stop()


def program(host: DebianHost) -> tuple[str, int]:
    status = host.run("supervisorctl status jobs", check=False).stdout.split()
    pid = int(status[3].rstrip(",")) if len(status) > 3 and status[2] == "pid" else 0
    return status[1] if len(status) > 1 else "", pid


def log_files(host: DebianHost) -> list[Path]:
    """The log and its rotated files, oldest first (jobs.log.2, jobs.log.1, jobs.log)."""
    directory = host.dir / "var/log/jobhost"
    rotated = sorted(directory.glob("jobs.log.*"), key=lambda p: -int(p.suffix[1:]))
    return [*rotated, directory / "jobs.log"]


def log_lines(host: DebianHost) -> list[bytes]:
    lines: list[bytes] = []
    for path in log_files(host):
        lines.extend(path.read_bytes().split(b"\n")[:-1])
    return lines


def pings(lines: list[bytes]) -> list[dict]:
    records = [json.loads(line) for line in lines]
    return [r for r in records if r.get("job") == "ping" and r.get("event") == "run_succeeded"]


def get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.read() if answer.status == 200 else None
    except (OSError, urllib.error.HTTPError):
        return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
