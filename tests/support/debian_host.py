"""A freshly made Debian bookworm host for the deploy tests: the cached root file
system unpacked into a temp dir and booted with `systemd-nspawn --boot`, so the
role meets a real systemd (packages that start daemons on install, units, a
boot order) and not a chroot's pretence of one. Ansible reaches it through the
chroot connection with `nsenter` into the container's namespaces.

The container shares the machine's network, so 127.0.0.1 inside it is the
machine's loopback: a Logstash stand-in listening there is reachable.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
TOOLS = ROOT / "var" / "test-tools"
ROOTFS = Path(os.environ.get("ROOTFS", TOOLS / "rootfs" / "bookworm-systemd.tar.zst"))
ANSIBLE = Path(os.environ.get("ANSIBLE", TOOLS / "ansible"))
ROOTFS = ROOTFS if ROOTFS.is_absolute() else ROOT / ROOTFS
ANSIBLE = ANSIBLE if ANSIBLE.is_absolute() else ROOT / ANSIBLE

NSENTER_EXEC = """#!/bin/sh
# Used as the chroot connection's "chroot" command: run CMD in the booted container.
root=$1; shift
exec nsenter --target "$(cat "$root.leader")" --all --wd=/ -- "$@"
"""


def missing() -> str | None:
    """Why the deploy tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "the deploy tests boot a container and need root"
    for tool in ("systemd-nspawn", "nsenter", "zstd", "git"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (./dev test installs it with apt as root)"
    if not ROOTFS.exists():
        return f"no Debian root file system at {ROOTFS} (./dev test makes it)"
    if not (ANSIBLE / "bin" / "ansible-playbook").exists():
        return f"no Ansible at {ANSIBLE} (./dev test installs it)"
    return None


class DebianHost:
    """One booted container; `run` executes a command in it."""

    def __init__(self, directory: Path, name: str):
        self.dir = directory / "root"
        self.dir.mkdir(parents=True)
        self.name = name
        self.console = open(directory / "console.log", "wb")  # noqa: SIM115 - closed in stop()
        unpack = f"zstd -dc {ROOTFS} | tar -C {self.dir} --numeric-owner -xpf -"
        subprocess.run(["sh", "-c", unpack], check=True, timeout=120)
        self.exec_wrapper = directory / "nspawn-exec"
        self.exec_wrapper.write_text(NSENTER_EXEC)
        self.exec_wrapper.chmod(0o755)
        self.proc = subprocess.Popen(
            [
                "systemd-nspawn",
                "--quiet",
                "--boot",
                "--register=no",
                "--keep-unit",
                "--console=passive",
                f"--machine={name}",
                f"--directory={self.dir}",
            ],
            stdout=self.console,
            stderr=subprocess.STDOUT,
        )
        self.leader = self._wait_for_leader()
        Path(f"{self.dir}.leader").write_text(str(self.leader))
        self._wait_until_booted()

    def _wait_for_leader(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = subprocess.run(
                ["pgrep", "-P", str(self.proc.pid), "-x", "systemd"], capture_output=True, text=True, check=False
            )
            if found.stdout.strip():
                return int(found.stdout.split()[0])
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the container did not boot; console: {self.console_tail()}")

    def _wait_until_booted(self) -> None:
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            state = self.run("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the container's systemd did not finish booting ({state!r}): {self.console_tail()}")

    def run(self, command: str, *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a shell command inside the container, as root."""
        done = subprocess.run(
            ["nsenter", "--target", str(self.leader), "--all", "--wd=/", "--", "/bin/sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{command!r} failed ({done.returncode}): {done.stderr}{done.stdout}")
        return done

    def read(self, path: str) -> str:
        return (self.dir / path.lstrip("/")).read_text()

    def inventory_line(self) -> str:
        """This host in an Ansible inventory, reached through the nsenter wrapper."""
        return (
            f"{self.name} ansible_host={self.dir} ansible_connection=community.general.chroot "
            f"ansible_chroot_exe={self.exec_wrapper}"
        )

    def console_tail(self) -> str:
        self.console.flush()
        return (self.dir.parent / "console.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.console.close()
        # Nothing is bind-mounted into the tree (never /dev), so removing it stays inside it.
        shutil.rmtree(self.dir, ignore_errors=True)
