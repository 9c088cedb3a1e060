"""A throw-away PostgreSQL cluster for the tests: initdb and pg_ctl from the machine's
server binaries (Debian's `postgresql` package), on 127.0.0.1, fsync off; a fresh
database per test. As root the server runs as the `postgres` user (initdb refuses root)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid

import psycopg


def server_bin() -> str | None:
    """The newest installed server's bin directory."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


class Cluster:
    """`also_listen`: one more address to serve (a test's veth), trusted like 127.0.0.1.
    `durable`: keep synchronous_commit on, so that a crash (`stop`, immediate) loses no commit,
    as on a production server; off, the last few hundred ms of commits may be lost."""

    def __init__(self, also_listen: str | None = None, *, durable: bool = False) -> None:
        self.durable = durable
        binaries = server_bin()
        assert binaries is not None
        self.bin = binaries
        self.base = tempfile.mkdtemp(prefix="jobhost-pg-")
        self.data = os.path.join(self.base, "data")
        self.listen = "127.0.0.1" + (f",{also_listen}" if also_listen else "")
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._as_postgres(
            "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        if also_listen:
            with open(os.path.join(self.data, "pg_hba.conf"), "a") as hba:
                hba.write(f"host all all {also_listen}/24 trust\n")
        self.start()

    def _as_postgres(self, tool: str, *args: str) -> None:
        command = [os.path.join(self.bin, tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)

    def start(self) -> None:
        options = (
            f"-c listen_addresses={self.listen} -p {self.port} -k {self.base} -c fsync=off "
            f"-c synchronous_commit={'on' if self.durable else 'off'} -c full_page_writes=off -c max_connections=200"
        )
        self._as_postgres("pg_ctl", "-D", self.data, "-l", os.path.join(self.base, "log"), "-w", "-o", options, "start")

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def url(self, dbname: str = "postgres", address: str = "127.0.0.1") -> str:
        return f"postgresql://postgres@{address}:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"jobs_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def query(self, url: str, sql: str) -> list[tuple]:
        with psycopg.connect(url, autocommit=True) as conn:
            return conn.execute(sql).fetchall()

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
