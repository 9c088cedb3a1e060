"""What the host can learn of, and do to, a run's process group after the fact."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

logger = logging.getLogger("jobhost.host")


def run_process_alive(pid: int) -> bool:
    """Is `pid` still a live run process: not a zombie, and leader of its own group as runs are?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to asking the kernel about the group
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = stat.rsplit(")", 1)[1].split()
    state, pgrp = fields[0], int(fields[2])
    return state not in ("Z", "X") and pgrp == pid


def kill_leftovers(pgid: int) -> None:
    """Kill what an abandoned run left in its process group (grandchildren outlive a SIGKILLed host)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    logger.warning(
        "killed the processes left in the group of an abandoned run (pgid %d)",
        pgid,
        extra={"event": "leftovers_killed"},
    )
