"""The commands that only read (`history`, `list`, `health`, `next`) start without the engine, the
runners or the observers: a monitor calls `health` every few seconds, a script `history --json`,
and neither should pay for the loop. Checked on the modules a real `python -X importtime jobs.py`
imports, by package."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, Deployment

# The packages a read-only command never imports.
ENGINE, RUNS, OBSERVERS = "jobhost.engine", "jobhost.runs", "jobhost.observe"
# What only serving or observing loads: the app's side of the loop, the web stack, the SDKs.
SERVING = ("jobhost.app.serve", "jobhost.web.server", "jobhost.web.app", "sentry_sdk", "prometheus_client")
LIBRARIES = ("waitress", "werkzeug", "jinja2", "psycopg")  # psycopg: PostgreSQL's alone

READ_ONLY = [
    ("history", "--limit", "1"),
    ("list",),
    ("health",),
    ("next", "tick"),
]


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def forbidden(module: str) -> bool:
    return any(within(module, name) for name in (ENGINE, RUNS, OBSERVERS, *SERVING, *LIBRARIES))


def imported(deployment: Deployment, *args: str) -> set[str]:
    """The modules `python -X importtime jobs.py ARGS` imports (its stderr names each one)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "jobs.py"), *args],
        env={**deployment.env, "SENTRY_DSN": ""},  # a DSN's check loads the SDK: configuration's cost
        capture_output=True,
        text=True,
        timeout=60,
        cwd=deployment.tmp,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 1), result.stderr  # `health` of a loop never started: 1
    return {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


@pytest.fixture
def ticking(deployment: Deployment) -> Deployment:
    deployment.write("ticks", "from jobhost import job, every\n\n@job(every(10).minutes)\ndef tick():\n    pass\n")
    assert deployment.cli("history").returncode == 0  # the SQLite state, made
    return deployment


@pytest.mark.parametrize("args", READ_ONLY, ids=[args[0] for args in READ_ONLY])
def test_a_read_only_command_imports_neither_the_engine_nor_the_runners_nor_the_observers(
    ticking: Deployment, args: tuple[str, ...]
) -> None:
    modules = imported(ticking, *args)
    assert "jobhost.app.cli" in modules and "jobhost.store.sqlite" in modules  # the measure measures
    assert sorted(m for m in modules if forbidden(m)) == []


def test_the_names_are_those_of_the_modules_a_run_imports(ticking: Deployment) -> None:
    modules = imported(ticking, "run", "tick")
    assert [package for package in (ENGINE, RUNS, OBSERVERS) if not any(within(m, package) for m in modules)] == []
