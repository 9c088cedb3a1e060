"""How a job's call ended, as data: its traceback starts at the job's own frames."""

from __future__ import annotations

from jobhost.runs.results import call_job


def _failing_job() -> None:
    raise ValueError("bad row 7")


def test_a_failures_traceback_leaves_out_the_engine_frames_that_called_the_job() -> None:
    result = call_job(_failing_job)
    assert result["ok"] is False and result["exc_type"] == "ValueError"
    frames = [line for line in result["traceback"].splitlines() if line.lstrip().startswith("File ")]
    assert len(frames) == 1 and "in _failing_job" in frames[0], result["traceback"]


def test_a_call_that_fails_in_the_engine_keeps_its_whole_traceback() -> None:
    result = call_job(42)  # type: ignore[arg-type]
    assert result["exc_type"] == "TypeError"
    assert 'File "' in result["traceback"] and "call_job" in result["traceback"]
