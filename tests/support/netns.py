"""A network namespace joined to this machine by a veth pair, for partition tests: a host
started inside it reaches the database only through the pair, which the test cuts and mends.
Made with `ip` (iproute2) as root; removed on close."""

from __future__ import annotations

import shutil
import subprocess
import uuid


def available() -> bool:
    import os

    return os.geteuid() == 0 and shutil.which("ip") is not None


class Partitionable:
    """Namespace `name`; this side of the pair is `outer` (10.231.7.1), the namespace's 10.231.7.2."""

    outer_address = "10.231.7.1"
    inner_address = "10.231.7.2"

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name = f"jobhost-{tag}"
        self.outer = f"jh{tag}o"
        inner = f"jh{tag}i"
        self._ip("netns", "add", self.name)
        self._ip("link", "add", self.outer, "type", "veth", "peer", "name", inner)
        self._ip("link", "set", inner, "netns", self.name)
        self._ip("addr", "add", f"{self.outer_address}/24", "dev", self.outer)
        self._ip("link", "set", self.outer, "up")
        self._ip("-n", self.name, "addr", "add", f"{self.inner_address}/24", "dev", inner)
        self._ip("-n", self.name, "link", "set", inner, "up")
        self._ip("-n", self.name, "link", "set", "lo", "up")

    def command(self, *argv: str) -> list[str]:
        """`argv` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        self._ip("link", "set", self.outer, "down")

    def mend(self) -> None:
        self._ip("link", "set", self.outer, "up")

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)
