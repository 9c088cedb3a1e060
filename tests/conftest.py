"""Fixtures for tests that start the real `python jobs.py` as a user would.

The tests are laid out by kind: `unit/` (an injected clock, no process of the host's own),
`contract/` (the state store's promises, over SQLite and PostgreSQL), `e2e/` (a real `python
jobs.py`), `deploy/` (supervisord, Ansible on a booted Debian host, the pages in Chromium), and
`support/`, the components they start. Everything under `e2e/` and `deploy/` is marked `e2e`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_COMPONENTS = os.environ.get("JOBHOST_REQUIRE_COMPONENTS") == "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `e2e` mark by directory: a test that starts real processes says so by where it lives."""
    for item in items:
        if {"e2e", "deploy"} & set(item.path.relative_to(ROOT).parts[1:2]):
            item.add_marker(pytest.mark.e2e)


def require(component: str, available: bool, how: str) -> None:
    """Skip a test whose component is missing, or fail it in CI (JOBHOST_REQUIRE_COMPONENTS=1)."""
    if available:
        return
    message = f"{component} is not available: {how}"
    if REQUIRE_COMPONENTS:
        pytest.fail(message)
    pytest.skip(message)


class Deployment:
    """A jobs package in a temp dir, its own state file, and ways to run jobs.py on it."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.root = ROOT  # the checkout whose jobs.py the commands run (a test may point it at a copy)
        self.package = f"jobs_{uuid.uuid4().hex[:8]}"
        self.jobs_dir = tmp_path / self.package
        self.jobs_dir.mkdir()
        (self.jobs_dir / "__init__.py").write_text("")
        self.env = {
            **os.environ,
            "JOBS_DIR": str(self.jobs_dir),
            "JOBS_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite3'}",
            "JOBS_DATA_DIR": str(tmp_path / "data"),
            "JOBS_HOST_DIR": str(tmp_path / "host"),  # on PostgreSQL: status files and outcomes, not the repo's var/
            "JOBS_LOG_FORMAT": "json",
            "JOBS_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }

    def write(self, module: str, source: str) -> Path:
        path = self.jobs_dir / f"{module}.py"
        path.write_text(textwrap.dedent(source))
        return path

    def cli(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(self.root / "jobs.py"), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmp,
        )

    def history(self, name: str | None = None, limit: int = 500, **env: str) -> list[dict]:
        result = self.cli("history", *([name] if name else []), "--limit", str(limit), "--json", **env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def start(self, *, prefix: tuple[str, ...] = (), **env: str) -> HostProcess:
        """`python jobs.py` with more `env`; `prefix`: a command to run it under (`ip netns exec ...`)."""
        return HostProcess(self, {**self.env, **env}, prefix)


class HostProcess:
    """`python jobs.py` running forever, its stdout collected line by line."""

    def __init__(self, deployment: Deployment, env: dict[str, str], prefix: tuple[str, ...] = ()):
        self.deployment = deployment
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, str(deployment.root / "jobs.py")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=deployment.tmp,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._changed:
                self.lines.append(raw.decode("utf-8"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def records(self) -> list[dict]:
        with self._changed:
            return [json.loads(line) for line in self.lines]

    def wait_for(self, predicate: Callable[[list[dict]], bool], timeout: float = 30, what: str = "") -> list[dict]:
        """Wait (bounded) until `predicate(records)` holds; fail with the log so far if not."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                records = [json.loads(line) for line in self.lines]
                if predicate(records):
                    return records
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    tail = "".join(self.lines[-30:])
                    pytest.fail(f"waited {timeout}s for {what or predicate}; host log tail:\n{tail}")
                self._changed.wait(min(left, 0.5))

    def stop(self, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self._reader.join(5)
        return code


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    return Deployment(tmp_path)


@pytest.fixture
def host(deployment: Deployment) -> Iterator[Callable[..., HostProcess]]:
    started: list[HostProcess] = []

    def start(*, prefix: tuple[str, ...] = (), **env: str) -> HostProcess:
        process = deployment.start(prefix=prefix, **env)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(10)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of the test's own, to fill up; findmnt must show it mounted there before any
    test fills it, so that a mount that did not happen never fills the machine's own disk."""
    require("root", os.geteuid() == 0, "mounting a small filesystem needs root (./dev test runs as root)")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True)
    require("tmpfs", mounted.returncode == 0, f"mount -t tmpfs failed: {mounted.stderr.decode().strip()}")
    try:
        found = subprocess.run(
            ["findmnt", "-n", "-o", "FSTYPE,SIZE", "--mountpoint", str(mount_point)], capture_output=True, text=True
        )
        assert found.stdout.split() == ["tmpfs", "4M"], f"{mount_point} is not the test's tmpfs: {found.stdout!r}"
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill_filesystem(directory: Path) -> Path:
    """Fill the filesystem of `directory` to the last byte; the file that does it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (65536, 1):  # then what a 64 KiB write could not take
            try:
                while os.write(fd, b"\0" * chunk):
                    pass
            except OSError as exc:
                assert exc.errno == 28  # ENOSPC
    finally:
        os.close(fd)
    return filler


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """A throw-away PostgreSQL cluster for the session (`new_database()` gives a fresh database)."""
    from tests.support.postgres_cluster import Cluster, server_bin

    require("PostgreSQL", server_bin() is not None, "install Debian's postgresql package (./dev test does as root)")
    cluster = Cluster()
    yield cluster
    cluster.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty state store of each kind: every store test runs on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.sqlite3'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[object]:
    from jobhost.store import open_store

    opened = open_store(store_url, tmp_path)
    yield opened
    opened.close()


def events(records: list[dict], job: str, event: str) -> list[dict]:
    return [r for r in records if r.get("job") == job and r.get("event") == event]
