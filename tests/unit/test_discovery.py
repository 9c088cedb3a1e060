"""Importing the jobs package: every module loads, and each broken one becomes a problem with file:line."""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import jobhost
from jobhost.definition.discovery import discover
from jobhost.definition.registry import Registry


@pytest.fixture
def registry(monkeypatch) -> Registry:
    """A registry of our own, which `from jobhost import job, every` in job modules picks up."""
    registry = Registry(default_zone=ZoneInfo("UTC"))
    monkeypatch.setattr(jobhost, "job", registry.job)
    monkeypatch.setattr(jobhost, "every", registry.every)
    return registry


@pytest.fixture
def package(tmp_path, monkeypatch):
    """An empty jobs package with a unique name, forgotten by sys.path and sys.modules afterwards."""
    name = f"jobs_{uuid.uuid4().hex[:12]}"
    directory = tmp_path.resolve() / name
    directory.mkdir()
    (directory / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(directory.parent))
    yield directory
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


def write(package: Path, module: str, source: str) -> None:
    (package / f"{module}.py").write_text(textwrap.dedent(source).lstrip())


GOOD = """
    from jobhost import every, job


    @job(every(10).minutes)
    def pull_rates():
        return "rates"
"""
SYNTAX_ERROR = """
    from jobhost import every, job

    def broken(:
        pass
"""
RAISES = """
    import os

    LIMIT = int(os.environ.get("NO_SUCH_VARIABLE_IN_TESTS", "ten"))
"""
BAD_JOB = """
    from jobhost import every, job


    @job(every().hour, timeout="5 minutez")
    def nightly():
        pass
"""


def by_file(problems) -> dict[str, tuple[int | None, str]]:
    return {Path(p.file).name: (p.line, str(p)) for p in problems}


def test_every_broken_module_is_one_problem_and_the_good_job_still_loads(package, registry):
    write(package, "good", GOOD)
    write(package, "syntax", SYNTAX_ERROR)
    write(package, "raises", RAISES)
    write(package, "bad_job", BAD_JOB)

    problems = discover(package, registry)

    assert len(problems) == 3
    found = by_file(problems)
    assert set(found) == {"syntax.py", "raises.py", "bad_job.py"}
    assert found["syntax.py"][0] == 3
    assert "SyntaxError" in found["syntax.py"][1]
    assert found["raises.py"][0] == 3
    assert f"importing {package.name}.raises failed: ValueError: invalid literal for int()" in found["raises.py"][1]
    assert found["bad_job.py"][0] == 4
    assert "job 'nightly': timeout '5 minutez' is not a duration" in found["bad_job.py"][1]
    assert list(registry.jobs) == ["pull_rates"]
    assert registry.jobs["pull_rates"].func() == "rates"
    assert Path(registry.jobs["pull_rates"].file).name == "good.py"


def test_an_error_raised_in_a_helper_points_at_the_helpers_line(package, registry):
    write(package, "_settings", 'def load():\n    raise KeyError("RATES_URL")\n')
    write(package, "rates", f"from {package.name}._settings import load\n\nCONFIG = load()\n")

    (problem,) = discover(package, registry)

    assert (Path(problem.file).name, problem.line) == ("_settings.py", 2)
    assert "KeyError: 'RATES_URL'" in str(problem)


def test_helpers_and_test_modules_are_not_imported(package, registry):
    write(package, "_helper", 'raise RuntimeError("a helper must not be imported")\n')
    write(package, "test_x", 'raise RuntimeError("a test must not be imported")\n')
    write(package, "good", GOOD)

    assert discover(package, registry) == []
    assert list(registry.jobs) == ["pull_rates"]
    assert f"{package.name}._helper" not in sys.modules
    assert f"{package.name}.test_x" not in sys.modules


def test_modules_in_subpackages_are_imported(package, registry):
    (package / "reports").mkdir()
    (package / "reports" / "__init__.py").write_text("")
    write(package / "reports", "monthly", GOOD.replace("pull_rates", "monthly_report"))

    assert discover(package, registry) == []
    assert list(registry.jobs) == ["monthly_report"]


def test_after_problems_are_found_once_everything_is_imported(package, registry):
    write(package, "load", 'from jobhost import every, job\n\n@job(every().hour, after="extract")\ndef load(): ...\n')
    write(package, "other", 'from jobhost import every, job\n\n@job(every().hour, after="nope")\ndef other(): ...\n')
    write(package, "xtract", "from jobhost import every, job\n\n@job(every().hour)\ndef extract(): ...\n")

    (problem,) = discover(package, registry)

    assert (Path(problem.file).name, problem.line, problem.job) == ("other.py", 3, "other")
    assert "after='nope' names no job" in str(problem)


def test_a_missing_directory_is_a_problem_not_an_exception(tmp_path, registry):
    missing = tmp_path / "no_such_jobs"

    (problem,) = discover(missing, registry)

    assert str(missing) in str(problem)
    assert "does not exist" in str(problem)
    assert registry.problems == [problem]


def test_subpackages_are_walked_but_helper_packages_are_not_imported(package, registry):
    (package / "_helpers").mkdir()
    write(package, "_helpers/__init__", 'raise RuntimeError("a helper package was imported")\n')
    (package / "team").mkdir()
    write(package, "team/__init__", GOOD)
    write(package, "team/nightly", GOOD.replace("pull_rates", "nightly_rates"))
    assert discover(package, registry) == []
    assert set(registry.jobs) == {"pull_rates", "nightly_rates"}


def test_a_jobs_directory_named_like_another_module_is_refused(tmp_path, registry, monkeypatch):
    directory = tmp_path / "json"  # the standard library's json is already imported
    directory.mkdir()
    (directory / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    [problem] = discover(directory, registry)
    assert "the jobs package name 'json' is taken by another module" in problem.problem
