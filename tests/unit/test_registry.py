"""The @job decorator: what it returns, what it records, and how it refuses bad definitions."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import schedule as schedule_lib

from jobhost.definition.registry import Registry
from jobhost.definition.schedules import CronSchedule, IntervalSchedule, cron
from jobhost.definition.spec import DEFAULT_TIMEOUT
from jobhost.errors import JobDefinitionError, display_path

HERE = display_path(__file__)


@pytest.fixture
def registry() -> Registry:
    return Registry(default_zone=ZoneInfo("UTC"))


def test_decorator_returns_the_function_unchanged(registry):
    def pull_rates(amount=2):
        return amount * 21

    decorated = registry.job(registry.every(10).minutes)(pull_rates)

    assert decorated is pull_rates
    assert decorated() == 42


def test_registration_records_the_spec_with_defaults(registry):
    @registry.job(registry.every(10).minutes)
    def pull_rates(): ...

    spec = registry.jobs["pull_rates"]
    assert spec.func is pull_rates
    assert isinstance(spec.schedule, IntervalSchedule)
    assert spec.schedule.next_slot(dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.UTC)) == dt.datetime(
        2026, 1, 1, 0, 10, tzinfo=dt.UTC
    )
    assert (spec.file, spec.line) == (HERE, pull_rates.__code__.co_firstlineno)
    assert spec.options() == {
        "timeout": DEFAULT_TIMEOUT,
        "retries": 0,
        "retry_delay": 60.0,
        "catchup": "latest",
        "overlap": "skip",
        "after": [],
        "isolation": "process",
        "catchup_window": 7 * 86400.0,
        "monitor": "pull_rates",
        "checkin_margin": 300.0,
        "report_each_attempt": False,
    }


def test_options_are_parsed(registry):
    @registry.job(cron("0 6 * * *", tz="Europe/London"), timeout="45m", retries=2, retry_delay="30s", catchup="all")
    def nightly(): ...

    spec = registry.jobs["nightly"]
    assert isinstance(spec.schedule, CronSchedule)
    assert spec.schedule.zone == ZoneInfo("Europe/London")
    assert (spec.timeout, spec.retries, spec.retry_delay, spec.catchup) == (2700.0, 2, 30.0, "all")


def test_timeout_none_means_no_limit(registry):
    @registry.job(registry.every().hour, timeout=None)
    def long_one(): ...

    assert registry.jobs["long_one"].timeout is None


def test_name_defaults_to_the_function_name_and_can_be_overridden(registry):
    @registry.job(registry.every().hour)
    def first(): ...

    @registry.job(registry.every().hour, name="reports.second")
    def second(): ...

    assert set(registry.jobs) == {"first", "reports.second"}
    assert registry.jobs["reports.second"].func is second


def _no_arguments(): ...


def _slot(slot): ...


def _optional_slot(slot=None): ...


def _varargs(*args, **kwargs): ...


def _slot_and_defaults(slot, limit=10): ...


@pytest.mark.parametrize(
    ("func", "wants_slot"),
    [(_no_arguments, False), (_slot, True), (_optional_slot, True), (_varargs, False), (_slot_and_defaults, True)],
)
def test_wants_slot_when_the_function_has_a_slot_parameter(registry, func, wants_slot):
    registry.job(registry.every().hour)(func)
    assert registry.jobs[func.__name__].wants_slot is wants_slot


def test_a_schedule_leaves_no_job_in_the_schedule_librarys_schedulers(registry):
    global_jobs = list(schedule_lib.default_scheduler.jobs)

    @registry.job(registry.every(5).minutes)
    def checked(): ...

    assert "checked" in registry.jobs
    assert registry.scheduler.jobs == []  # checked there, then let go: nothing kept per job
    assert schedule_lib.default_scheduler.jobs == global_jobs


# -- refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"timout": "5m"}, ["unknown option 'timout' (did you mean 'timeout'?)", "the options are after, catchup"]),
        ({"timeout": "5 minutez"}, ["timeout '5 minutez' is not a duration", "'30s', '45m', '2h'"]),
        ({"retries": -1}, ["retries must be a whole number of at least 0, not -1"]),
        ({"retry_delay": "later"}, ["retry_delay 'later' is not a duration"]),
        ({"catchup": "sometimes"}, ["catchup='sometimes' is not one of: 'latest', 'all', 'none'"]),
        ({"overlap": "never"}, ["overlap='never' is not one of: 'skip', 'queue', 'allow'"]),
        ({"isolation": "container"}, ["isolation='container' is not one of: 'process', 'thread'"]),
        ({"after": 5}, ["after must be a job name or a list of them"]),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else None,
)
def test_bad_option_names_the_job_and_its_location(registry, options, words):
    with registry.collecting():

        @registry.job(registry.every().hour, **options)
        def nightly(): ...

    assert len(registry.problems) == 1
    problem = registry.problems[0]
    assert str(problem).startswith(f"{HERE}:{nightly.__code__.co_firstlineno}: job 'nightly': ")
    for word in words:
        assert word in str(problem)
    assert "nightly" not in registry.jobs


def test_bad_definition_raises_at_once_outside_collecting(registry):
    decorate = registry.job(registry.every().hour, retries=-1)
    with pytest.raises(JobDefinitionError, match="retries must be a whole number") as info:
        decorate(_no_arguments)
    assert (info.value.job, info.value.file) == ("_no_arguments", HERE)
    assert registry.jobs == {}


@pytest.mark.parametrize(
    ("schedule", "words"),
    [
        (lambda every: every(5).to(10).minutes, ["job 'nightly'", "every(5).to(10)", "every(5).minutes"]),
        (lambda every: cron("61 * * * *"), ["job 'nightly'", "cron('61 * * * *')", "Bad minute"]),
        (lambda every: "daily", ["job 'nightly'", "every(...) or cron(...)"]),
    ],
)
def test_bad_schedule_names_the_job_and_its_location(registry, schedule, words):
    with registry.collecting():

        @registry.job(schedule(registry.every))
        def nightly(): ...

    (problem,) = registry.problems
    assert (problem.file, problem.line) == (HERE, nightly.__code__.co_firstlineno)
    for word in words:
        assert word in str(problem)


def test_job_without_a_schedule_is_refused(registry):
    with registry.collecting():

        @registry.job
        def forgot(): ...

    (problem,) = registry.problems
    assert "@job needs a schedule, for example @job(every(10).minutes)" in str(problem)
    assert problem.job == "forgot"
    assert forgot() is None  # still the plain function


@pytest.mark.parametrize("name", ["has space", "", "x" * 129, 7])
def test_bad_name_is_refused(registry, name):
    with pytest.raises(JobDefinitionError, match="must be letters, digits"):
        registry.job(registry.every().hour, name=name)(_no_arguments)


def test_function_with_a_parameter_it_cannot_be_given_is_refused(registry):
    def export(path): ...

    with pytest.raises(
        JobDefinitionError, match="parameter 'path' has no default: a scheduled run could give it no value"
    ):
        registry.job(registry.every().hour)(export)


def test_duplicate_name_names_the_other_location(registry):
    with registry.collecting():

        @registry.job(registry.every().hour)
        def report(): ...

        first = report

        @registry.job(registry.every().day, name="report")
        def other(): ...

    (problem,) = registry.problems
    assert str(problem).startswith(f"{HERE}:{other.__code__.co_firstlineno}: job 'report': ")
    assert f"already used by the job at {HERE}:{first.__code__.co_firstlineno}" in str(problem)
    assert "name='...'" in str(problem)
    assert registry.jobs["report"].func is first


def test_after_naming_a_missing_job_is_found_by_validate(registry):
    @registry.job(registry.every().hour)
    def extract(): ...

    @registry.job(registry.every().hour, after=["extract", "extrac_t"])
    def load(): ...

    with registry.collecting():
        problems = registry.validate()

    (problem,) = problems
    assert str(problem).startswith(f"{HERE}:{load.__code__.co_firstlineno}: job 'load': ")
    assert "after='extrac_t' names no job (did you mean 'extract'?)" in str(problem)


def test_after_accepts_functions_and_single_names(registry):
    @registry.job(registry.every().hour)
    def extract(): ...

    @registry.job(registry.every().hour, after=extract)
    def load(): ...

    @registry.job(registry.every().hour, after="load")
    def publish(): ...

    assert registry.validate() == []
    assert registry.jobs["load"].after == ("extract",)
    assert registry.jobs["publish"].after == ("load",)


def test_after_cycle_is_found_by_validate(registry):
    @registry.job(registry.every().hour, after="c")
    def a(): ...

    @registry.job(registry.every().hour, after="a")
    def b(): ...

    @registry.job(registry.every().hour, after="b")
    def c(): ...

    @registry.job(registry.every().hour, after="a")
    def d(): ...  # depends on the cycle, but is not in it

    with registry.collecting():
        problems = registry.validate()

    (problem,) = problems
    assert "after= makes a cycle: a -> c -> b -> a" in str(problem)
    assert problem.file == HERE


def test_validate_raises_outside_collecting(registry):
    @registry.job(registry.every().hour, after="ghost")
    def lonely(): ...

    with pytest.raises(JobDefinitionError, match="after='ghost' names no job"):
        registry.validate()


def test_collecting_gathers_every_problem_and_keeps_the_good_jobs(registry):
    with registry.collecting():

        @registry.job(registry.every().hour, timout=5)
        def one(): ...

        @registry.job(registry.every().hour)
        def good(): ...

        @registry.job(cron("0 0 * * * *"))
        def two(): ...

        @registry.job(registry.every().hour, catchup="sometimes")
        def three(): ...

    assert [problem.job for problem in registry.problems] == ["one", "two", "three"]
    assert list(registry.jobs) == ["good"]
    # and once collecting ends, the decorator raises again
    with pytest.raises(JobDefinitionError):
        registry.job(registry.every().hour, overlap="maybe")(_no_arguments)


def test_schedule_dsl_mistakes_are_reported_with_the_job_and_the_import_goes_on(registry):
    with registry.collecting():

        @registry.job(registry.every().day.at("25:00"))
        def bad_hour(): ...

        @registry.job(registry.every(2).monday)
        def two_mondays(): ...

        @registry.job(registry.every(10).minutes)
        def fine(): ...

    problems = {p.job: p.problem for p in registry.problems}
    assert "at('25:00')" in problems["bad_hour"] and "between 0 and 23" in problems["bad_hour"]
    assert "{}" not in problems["bad_hour"]
    assert ".monday" in problems["two_mondays"] and "weekly" in problems["two_mondays"]
    assert list(registry.jobs) == ["fine"]


def test_a_schedule_mistake_echoes_the_chain_as_it_was_written(registry):
    with registry.collecting():

        @registry.job(registry.every().day.at("25:00"))
        def bad_hour(): ...

        @registry.job(registry.every(3).day)
        def three_day(): ...

    problems = {p.job: p.problem for p in registry.problems}
    assert problems["bad_hour"].startswith("every().day.at('25:00'): ")
    assert problems["three_day"].startswith("every(3).day: ")  # the library's own .days is not shown


def test_every_bad_option_of_a_job_is_reported_at_once(registry):
    with pytest.raises(JobDefinitionError) as info:

        @registry.job(registry.every(1).hours, overlap="queued", catchup="some", isolation="proc", retries=-1)
        def many(): ...

    for words in ("retries", "catchup='some'", "overlap='queued'", "isolation='proc'"):
        assert words in info.value.problem


def test_a_bad_schedule_a_bad_option_and_a_bad_after_are_reported_together(registry):
    with pytest.raises(JobDefinitionError) as info:

        @registry.job(cron("61 * * * *"), timeout="soon", after=42)
        def everything_wrong(): ...

    for words in ("61", "timeout", "after must be a job name"):
        assert words in info.value.problem, info.value.problem


def test_after_a_function_means_the_job_it_was_registered_as(registry):
    @registry.job(registry.every(1).hours, name="renamed_source")
    def source(): ...

    @registry.job(registry.every(1).hours, after=source)
    def follower(): ...

    assert registry.validate() == []
    assert registry.jobs["follower"].after == ("renamed_source",)


def test_a_time_zone_on_a_sub_day_interval_is_refused(registry):
    with pytest.raises(JobDefinitionError, match="cannot use its time zone"):

        @registry.job(registry.every().hour.at(":00", "Asia/Kathmandu"))
        def hourly(): ...


def test_a_path_is_shown_whole_when_the_working_directory_was_removed(tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()  # os.getcwd() now fails, as under a shell whose directory was deleted
    assert display_path("/srv/jobs/broken.py") == "/srv/jobs/broken.py"


def _module_of_jobs(registry: Registry, file: str, count: int, *, first: int = 0) -> dict[str, int]:
    """Run, as module `file`, `count` decorated jobs with a statement of varied length between
    them; return each job's name and the line of its decorator."""
    lines: list[str] = []
    for number in range(first, first + count):
        lines += ["@job(every(1).hours)", f"def job_{number}(): ...", f"padding = {list(range(number % 7))}"]
    exec(compile("\n".join(lines), file, "exec"), {"job": registry.job, "every": registry.every})
    return {
        line[4:-7]: index for index, line in enumerate(lines) if line.startswith("def ")
    }  # 1-based: the line before


def test_a_module_of_thousands_of_jobs_records_each_decorators_line(registry, tmp_path):
    expected = _module_of_jobs(registry, str(tmp_path / "many.py"), 3000)

    recorded = {name: spec.line for name, spec in registry.jobs.items()}
    assert recorded == expected
    assert {spec.file for spec in registry.jobs.values()} == {str(tmp_path / "many.py")}


def test_jobs_from_modules_in_turn_each_get_their_own_file_and_line(registry, tmp_path):
    first = _module_of_jobs(registry, str(tmp_path / "a.py"), 5)
    second = _module_of_jobs(registry, str(tmp_path / "b.py"), 5, first=5)
    again = _module_of_jobs(registry, str(tmp_path / "a.py"), 5, first=10)

    for names, file in ((first, "a.py"), (second, "b.py"), (again, "a.py")):
        for name, line in names.items():
            assert (registry.jobs[name].file, registry.jobs[name].line) == (str(tmp_path / file), line)
