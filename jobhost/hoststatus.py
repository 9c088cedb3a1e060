"""The loop's status file: what the loop of this machine is doing, for `health` to read.

The state store cannot carry that truth alone: a loop on a full disk or a damaged
state file cannot write its heartbeat there, and a host that refuses to start does
so before it has a store. So the loop also rewrites a small file beside the state
at each heartbeat and at each change (starting, running, the store failing or back,
stopping, stopped, refused to start, with the reason).

The file is two fixed 4 KiB slots, written in turn, in place: once made, rewriting
it needs no new disk block (on a file system that writes in place, such as ext4 or
XFS), so it goes on working on a full disk. Each slot carries a sequence number and a
checksum, so a reader takes the newest whole slot and never half of one, even when a
write is cut by a crash. Each record also says which release the loop runs and when its
process started, so that a command run from a newer checkout can tell that the loop
still runs an older one. A reader takes the fields it knows and leaves the others: a
record written by a newer release is still read, and one written before a field
existed reads it as None.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import os
import signal
import time
import zlib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

logger = logging.getLogger("jobhost.status")

SLOT = 4096  # bytes of one record; the file holds two
MAGIC = b"jobhost-status 1 "
MAX_REASON = 3000  # characters of a reason kept: a slot must hold the record whole
MAX_RELEASE = 200  # characters of a release name kept (a commit is 40)
# What a command sends the loop the file names (its pid) to have it look at the store's requests
# now, a cancel, rather than at its next tick: a signal that only wakes it.
NUDGE_SIGNAL = signal.SIGUSR1


class State(enum.StrEnum):
    STARTING = "starting"  # importing jobs, opening the store: not beating yet
    RUNNING = "running"  # the loop goes round (`store_failure` says if the store fails)
    STOPPING = "stopping"  # a stop signal came: runs in flight are finishing
    STOPPED = "stopped"  # ended cleanly
    REFUSED = "refused"  # refused to start: `reason` says why


@dataclass(frozen=True)
class Status:
    """One record of the file: who wrote it, when, and in what state."""

    state: State
    host: str
    pid: int
    at: str  # ISO 8601 UTC, when written
    boot_clock: float  # CLOCK_BOOTTIME when written: an age no change of the wall clock bends
    boot_id: str  # the machine's boot this was written in
    pid_start: int  # the writer's start time in clock ticks since boot (a reused pid has another)
    heartbeat_interval: float
    reason: str = ""  # refused or stopping: why; starting: what it does
    store_failure: str | None = None  # what is wrong with the state store, while it fails
    state_file: str | None = None  # "device:inode" of the SQLite file the loop has open, once it has
    release: str | None = None  # the release (commit) of the code the loop runs, if known
    started_at: str | None = None  # ISO 8601 UTC, when the loop's process started

    @property
    def alive_loop(self) -> bool:
        """Does a loop run now: its writer is alive and has not stopped or refused to start."""
        return self.state not in (State.STOPPED, State.REFUSED) and self.writer_alive()

    @property
    def written(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.at)

    def age(self, now: dt.datetime) -> float:
        """Seconds since it was written: by the boot clock in the same boot, else by the wall clock."""
        if self.boot_id == boot_id():
            return time.clock_gettime(time.CLOCK_BOOTTIME) - self.boot_clock
        return (now - self.written).total_seconds()

    def writer_alive(self) -> bool:
        """Is the process that wrote it still running (not a later process given the same pid)?"""
        return self.boot_id == boot_id() and process_start(self.pid) == self.pid_start


def file_identity(path: Path) -> str | None:
    """Which file `path` names now ("device:inode"), None if none."""
    try:
        found = path.stat()
    except OSError:
        return None
    return f"{found.st_dev}:{found.st_ino}"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_started_at(pid: int) -> dt.datetime | None:
    """When process `pid` started, on the wall clock (the boot time plus its start in clock ticks:
    what Prometheus' process_start_time_seconds says of it too)."""
    ticks = process_start(pid)
    try:
        booted = next(
            int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    if ticks is None:
        return None
    return dt.datetime.fromtimestamp(booted + ticks / os.sysconf("SC_CLK_TCK"), dt.UTC)


def process_start(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot; None if there is no such process, or
    only its corpse (a zombie: killed, and not yet reaped by its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


class StatusFile:
    """The writer (the loop's process) and the reader (`health`) of one status file.

    `path` None: the record is only kept in memory (`last`), for the HTTP face of this process.
    Writing never raises: a status file that cannot be written is said once in the log, and
    `health` falls back on the store's heartbeat.
    """

    def __init__(self, path: Path | None, host: str, heartbeat_interval: float, release: str | None = None):
        self.path = path
        self.host = host
        self.heartbeat_interval = heartbeat_interval
        self.release = release[:MAX_RELEASE] if release else None  # what the loop runs, for every face of it
        started = process_started_at(os.getpid())
        self.started_at = started.isoformat() if started is not None else None
        self.last: Status | None = None
        self.state_file: str | None = None  # set by the loop once it holds its state file's lock
        self._fd: int | None = None
        self._seq = 0
        self._silent = False  # another live loop owns the file, or it failed: nothing more is written
        self._said = False

    def write(self, state: State, reason: str = "", store_failure: str | None = None) -> None:
        """Record `state` now (in memory, and in the file unless it is not ours to write)."""
        if len(reason) > MAX_REASON:
            reason = reason[: MAX_REASON - 1] + "…"
        if store_failure is not None and len(store_failure) > MAX_REASON:
            store_failure = store_failure[: MAX_REASON - 1] + "…"
        pid = os.getpid()
        self.last = Status(
            state,
            self.host,
            pid,
            dt.datetime.now(dt.UTC).isoformat(),
            time.clock_gettime(time.CLOCK_BOOTTIME),
            boot_id(),
            process_start(pid) or 0,
            self.heartbeat_interval,
            reason,
            store_failure,
            self.state_file,
            self.release,
            self.started_at,
        )
        if self.path is None or self._silent:
            return
        try:
            self._write(self.last)
        except OSError as exc:
            self._silent = True
            logger.warning(
                "cannot write the status file %s (%s); health reads the state store's heartbeat instead",
                self.path,
                exc.strerror or exc,
                extra={"event": "status_file_failed"},
            )

    def taken_by_another(self) -> Status | None:
        """The record of another loop that is alive and has not stopped, if one owns the file; then
        this process writes nothing to it (a second `python jobs.py` must not speak for the first)."""
        if self.path is None:
            return None
        current = read_status(self.path)
        if current is None or current.pid == os.getpid() or not current.writer_alive():
            return None
        if current.state in (State.STOPPED, State.REFUSED):
            return None
        self._silent = True
        return current

    def claim(self) -> None:
        """This process holds the loop's lock now: the file is its own, whoever wrote it last (a loop
        killed and not yet reaped, say, which is no loop any more)."""
        if self._silent and self.path is not None and self.last is not None:
            self._silent = False
            self.write(self.last.state, self.last.reason, self.last.store_failure)

    def withdraw(self) -> None:
        """This process may not run the loop (another one holds the lock): take back what it wrote, so
        that `health` reads the running loop's truth (its heartbeat), not a starting process gone."""
        if self.path is not None and not self._silent and self._fd is not None:
            current = read_status(self.path)
            if current is not None and current.pid == os.getpid():
                self.path.unlink(missing_ok=True)
        self._silent = True
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write(self, status: Status) -> None:
        assert self.path is not None
        if self._fd is not None and file_identity(self.path) != self._opened:  # removed or replaced: made anew
            self.close()
        if self._fd is None:
            self._fd = self._open()
            self._opened = file_identity(self.path)
        self._seq += 1
        body = _encoded(status, SLOT - len(MAGIC) - 32)
        header = MAGIC + f"{self._seq:016x} {zlib.crc32(body):08x} {len(body):04x}\n".encode()
        slot = (header + body).ljust(SLOT, b"\0")
        os.pwrite(self._fd, slot, SLOT * (self._seq % 2))

    _opened: str | None = None  # which file the descriptor is, to notice it removed or replaced

    def _open(self) -> int:
        """Open the file, made whole at its full size first so rewriting it takes no new block."""
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if os.fstat(fd).st_size < 2 * SLOT:
                os.pwrite(fd, bytes(2 * SLOT), 0)
                os.fsync(fd)
            self._seq = max((seq for seq, _ in _slots(os.pread(fd, 2 * SLOT, 0))), default=0)
        except OSError:
            os.close(fd)
            raise
        return fd


def _encoded(status: Status, room: int) -> bytes:
    """The record as JSON in at most `room` bytes: its reason and its store failure shortened, the
    longer first, however many bytes their characters take (a record must never spill into the other)."""
    body = json.dumps(asdict(status), ensure_ascii=False).encode()
    while len(body) > room:
        field = max(("reason", "store_failure"), key=lambda name: len(getattr(status, name) or ""))
        text = getattr(status, field) or ""
        if len(text) <= 1:  # nothing left to shorten (the other fields are small by their nature)
            break
        shortened = text[: len(text) // 2] + "…"
        status = replace(status, reason=shortened) if field == "reason" else replace(status, store_failure=shortened)
        body = json.dumps(asdict(status), ensure_ascii=False).encode()
    return body


_FIELDS = {f.name for f in fields(Status)}


def read_status(path: Path) -> Status | None:
    """The newest whole record of the file; None if there is none (no file, or nothing readable).
    A slot caught while it is written fails its checksum, and the other one is taken."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(2 * SLOT)
    except OSError:
        return None
    slots = sorted(_slots(data), key=lambda s: s[0])
    return slots[-1][1] if slots else None


def _slots(data: bytes) -> list[tuple[int, Status]]:
    """The records in `data` that are whole (their checksum matches), with their sequence numbers."""
    found = []
    for offset in (0, SLOT):
        slot = data[offset : offset + SLOT]
        if not slot.startswith(MAGIC):
            continue
        head, _, rest = slot[len(MAGIC) :].partition(b"\n")
        try:
            seq_text, crc_text, length_text = head.split()
            seq, crc, length = int(seq_text, 16), int(crc_text, 16), int(length_text, 16)
            body = rest[:length]
            if len(body) != length or zlib.crc32(body) != crc:
                continue
            written = json.loads(body)
            known = {name: value for name, value in written.items() if name in _FIELDS}  # a newer writer's: left
            found.append((seq, replace(Status(**known), state=State(written["state"]))))
        except (ValueError, TypeError, AttributeError):
            continue
    return found
