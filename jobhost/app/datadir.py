"""The directory jobs write their files in (JOBS_DATA_DIR): made if missing, and proven writable
before anything runs, so that a deploy whose jobs could not write fails its `check`, not its jobs."""

from __future__ import annotations

import os
import pwd
import tempfile
from pathlib import Path


def unusable(path: Path) -> str | None:
    """Make `path` (and its parents) if it is missing and write a file in it; None if that worked,
    else what is wrong, naming the directory, the setting and the user."""
    if path.exists() and not path.is_dir():
        return f"JOBS_DATA_DIR: {path} is not a directory; the jobs need a directory to write their files in"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"JOBS_DATA_DIR: cannot create the data directory {path} for the jobs ({_why(exc)}, as {_user()})"
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".jobhost-write-check-")
    except OSError as exc:
        return (
            f"JOBS_DATA_DIR: the jobs cannot write in their data directory {path} ({_why(exc)}, as {_user()}); "
            "give it to the user the jobs run as, or point JOBS_DATA_DIR elsewhere"
        )
    os.close(fd)
    os.unlink(probe)
    return None


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _user() -> str:
    uid = os.geteuid()
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"
