"""The program file `./dev supervise` writes gives supervisord a stopwaitsecs that outlasts the
host's own stop: JOBS_STOP_GRACE, the 5-s kill of what is left, and time to record it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from configuration.supervisor import write_local


def stop_wait(directory: Path) -> int:
    return int(re.search(r"^stopwaitsecs=(\d+)$", (directory / "jobs.conf").read_text(), re.M).group(1))


@pytest.mark.parametrize(("grace", "expected"), [(None, 60), ("2m", 150), ("0.5", 31)])
def test_stopwaitsecs_follows_the_stop_grace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grace, expected):
    if grace is None:
        monkeypatch.delenv("JOBS_STOP_GRACE", raising=False)
    else:
        monkeypatch.setenv("JOBS_STOP_GRACE", grace)
    write_local(tmp_path)
    assert stop_wait(tmp_path) == expected
