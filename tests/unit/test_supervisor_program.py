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


def test_a_local_run_gets_a_settings_file_of_its_own_with_a_status_page_and_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOBS_STOP_GRACE", raising=False)
    write_local(tmp_path)
    settings = tmp_path / "jobs.env"
    assert settings.stat().st_mode & 0o777 == 0o600
    text = settings.read_text()
    assert "JOBS_HTTP_ADDR=127.0.0.1:8377" in text and re.search(r"^JOBS_HTTP_TOKEN=[0-9a-f]{48}$", text, re.M)
    assert f'JOBS_ENV_FILE="{settings}"' in (tmp_path / "jobs.conf").read_text()
    settings.write_text(text + "JOBS_STOP_GRACE=2m\n")  # a person's change is kept, and followed
    write_local(tmp_path)
    assert settings.read_text().endswith("JOBS_STOP_GRACE=2m\n") and stop_wait(tmp_path) == 150
