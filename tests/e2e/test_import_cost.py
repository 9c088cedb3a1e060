"""The commands that only read (`history`, `list`, `health`, `next`) start without the engine, the
runners or the observers: a monitor calls `health` every few seconds, a script `history --json`,
and neither should pay for the loop. Checked on the modules a real `python -X importtime jobs.py`
imports, by name, both where the modules are today and in the packages they are moving to."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, Deployment

# Each group as today's modules and the package they are moving to.
ENGINE = (
    {
        "jobhost.host",
        "jobhost.backfill",
        "jobhost.recovery",
        "jobhost.slotqueue",
        "jobhost.retries",
        "jobhost.catchup",
        "jobhost.dependencies",
        "jobhost.storelink",
    },
    "jobhost.engine",
)
RUNS = (
    {"jobhost.processrun", "jobhost.threadrun", "jobhost.child", "jobhost.watcher", "jobhost.run", "jobhost.output"},
    "jobhost.runs",
)
OBSERVERS = (
    {"jobhost.lifecycle", "jobhost.sentry", "jobhost.sentry_scrubber", "jobhost.metrics", "jobhost.runlines"},
    "jobhost.observe",
)
# What only serving or observing loads: the app's side of the loop, the web stack, the SDKs.
SERVING = ("jobhost.app.serve", "jobhost.web.server", "jobhost.web.app", "sentry_sdk", "prometheus_client")
LIBRARIES = ("waitress", "werkzeug", "jinja2", "psycopg")  # psycopg: PostgreSQL's alone

# Still imported on the read path, by shared modules that need one name from them (the cut is left to
# the engine's rewrite): each as today's name and its future one. Remove an entry once nothing there
# needs it; the second test says when.
NOT_YET = {
    # outcomes.py (shorten), discovery.py (LineSplitter), configuration/log_stream.py (cut_record)
    "output": {"jobhost.output", "jobhost.runs.output"},
    # store/base.py and store/sql.py: PendingRetry, a record of the store's
    "retries": {"jobhost.retries", "jobhost.engine.retries"},
}

READ_ONLY = [
    ("history", "--limit", "1"),
    ("list",),
    ("health",),
    ("next", "tick"),
]


def in_group(module: str, group: tuple[set[str], str]) -> bool:
    names, package = group
    return module in names or module.startswith(f"{package}.")


def forbidden(module: str) -> bool:
    return any(in_group(module, group) for group in (ENGINE, RUNS, OBSERVERS)) or any(
        module == name or module.startswith(f"{name}.") for name in SERVING + LIBRARIES
    )


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
    pending = set().union(*NOT_YET.values())
    assert sorted(m for m in modules if forbidden(m) and m not in pending) == []


def test_each_module_still_let_through_is_still_imported(ticking: Deployment) -> None:
    modules = imported(ticking, "history", "--limit", "1")
    assert [what for what, names in NOT_YET.items() if not names & modules] == []


def test_the_names_are_those_of_the_modules_a_run_imports(ticking: Deployment) -> None:
    modules = imported(ticking, "run", "tick")
    assert [group for group in (ENGINE, RUNS, OBSERVERS) if not any(in_group(m, group) for m in modules)] == []
