"""The ``@job`` decorator and the registry it fills.

The decorator validates everything when the module is imported, records a
JobSpec, binds the schedule onto the registry's own ``schedule.Scheduler``
(never the library's global one) and returns the function unchanged, so a
test can still call it directly.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import schedule as schedule_lib

from jobhost.definition import graph
from jobhost.definition.callsite import call_site
from jobhost.definition.dsl import CheckedJob
from jobhost.definition.graph import dependency_name
from jobhost.definition.options import Check, given_parameters
from jobhost.definition.schedules import build_schedule
from jobhost.definition.spec import OPTION_NAMES, OPTIONS, JobSpec
from jobhost.definition.timezones import system_zone
from jobhost.errors import JobDefinitionError, JobhostError

F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class JobRules:
    """Rules another part of the host adds to every job definition, so that the definition of a job
    depends on no reporter: Sentry's monitors add their slug rules (jobhost/__init__.py installs them).

    `options` checks, by name, an option JobSpec leaves unchecked (`monitor`): (the value given,
    the job's name) -> the value kept, or ValueError. `validate` looks at the whole set of jobs
    once registered: it may replace a spec, and returns the problems it found.
    """

    options: Mapping[str, Callable[[object, str], object]] = field(default_factory=dict)
    validate: Callable[[dict[str, JobSpec]], list[JobDefinitionError]] | None = None


RULES: list[JobRules] = []  # read by every registry, at each job and each validate


def add_rules(rules: JobRules) -> None:
    """Install `rules` for every registry (once: installing them again changes nothing)."""
    if rules not in RULES:
        RULES.append(rules)


@dataclass
class Registry:
    """Every job of one host, plus the problems found while registering them.

    While `collecting()` is active (the discovery of ``jobs/`` does this), a bad
    definition is recorded and importing goes on, so `check` can list every
    problem at once; otherwise the decorator raises at once.
    """

    default_zone: ZoneInfo = field(default_factory=system_zone)
    scheduler: schedule_lib.Scheduler = field(default_factory=schedule_lib.Scheduler)
    jobs: dict[str, JobSpec] = field(default_factory=dict)
    problems: list[JobDefinitionError] = field(default_factory=list)
    _collecting: int = 0
    _dependencies: list[graph.Dependency] = field(default_factory=list)

    def every(self, interval: int | None = None) -> schedule_lib.Job:
        """The `schedule` DSL (``every(10).minutes``), bound to this registry's scheduler."""
        job = CheckedJob(1 if interval is None else interval, self.scheduler)
        job.written = "every()" if interval is None else f"every({interval!r})"
        return job

    @contextmanager
    def collecting(self) -> Iterator[None]:
        self._collecting += 1
        try:
            yield
        finally:
            self._collecting -= 1

    def report(self, problem: JobDefinitionError) -> None:
        if not self._collecting:
            raise problem
        self.problems.append(problem)

    def job(self, schedule: object = None, **options: Any) -> Callable[[F], F]:
        """Register the decorated function to run on `schedule` (see docs/jobs.md)."""
        file, line = call_site()
        if callable(schedule) and not isinstance(schedule, schedule_lib.Job):
            where = JobDefinitionError(
                "@job needs a schedule, for example @job(every(10).minutes)",
                job=getattr(schedule, "__name__", None),
                file=file,
                line=line,
            )
            self.report(where)
            return schedule

        def decorate(func: F) -> F:
            name = options.get("name", getattr(func, "__name__", None))
            try:
                spec = self._make_spec(func, schedule, dict(options), file, line)
            except JobDefinitionError as exc:
                self.report(exc)
                return func
            except JobhostError as exc:
                self.report(JobDefinitionError(str(exc), job=name, file=file, line=line))
                return func
            self._add(spec)
            return func

        return decorate

    def _make_spec(
        self, func: Callable[..., Any], schedule: object, options: dict[str, Any], file: str, line: int
    ) -> JobSpec:
        name = options.pop("name", getattr(func, "__name__", None))

        def fail(message: str) -> JobDefinitionError:
            return JobDefinitionError(message, job=name if isinstance(name, str) else None, file=file, line=line)

        if not callable(func):
            raise fail("@job(...) decorates a function")
        if not isinstance(name, str) or not _NAME.match(name):
            raise fail(f"name {name!r} must be letters, digits, '_', '.' or '-' (at most 128)")
        unknown = sorted(set(options) - OPTION_NAMES)
        if unknown:
            hints = []
            for given_name in unknown:
                close = difflib.get_close_matches(given_name, sorted(OPTION_NAMES), n=1)
                hints.append(f"{given_name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise fail(
                f"unknown option {', '.join(hints)}; the options are {', '.join(sorted(OPTION_NAMES | {'name'}))}"
            )
        # Every problem of the job at once (its schedule, each option, after=, its parameters): a
        # bad timeout must not hide a bad after.
        errors: list[str] = []
        built = None
        if isinstance(schedule, CheckedJob) and schedule.error:
            errors.append(f"{schedule.written}: {schedule.error}")
        else:
            try:
                built = build_schedule(schedule, self.default_zone)
            except JobhostError as exc:
                errors.append(str(exc))
        values: dict[str, Any] = {}
        for option in OPTIONS:
            check = option.check or _added_check(option.name, name)
            if check is None:  # after=: resolved below and once every job is known (or rules not installed)
                continue
            try:
                values[option.name] = check(options.get(option.name, option.default), option.name)
            except ValueError as exc:
                errors.append(str(exc))
        after = options.get("after", ())
        if isinstance(after, str) or callable(after):
            after = (after,)
        if not isinstance(after, list | tuple):
            errors.append(f"after must be a job name or a list of them, not {after!r}")
        given = given_parameters(func)
        if isinstance(given, str):
            errors.append(given)
        if errors or built is None:
            raise fail("; ".join(errors))
        if isinstance(schedule, schedule_lib.Job):  # the library's own checks, on our own scheduler
            try:
                schedule.do(func)
            except (schedule_lib.ScheduleError, ValueError, TypeError) as exc:
                raise fail(f"schedule: {exc}") from exc
            finally:  # `built` has what the slots need; the library's job would be 0.7 KiB a job kept
                with contextlib.suppress(ValueError, AttributeError):
                    schedule.scheduler.jobs.remove(schedule)  # type: ignore[union-attr]
        for dependency in after:
            self._dependencies.append((name, dependency, file, line))
        return JobSpec(
            name=name,
            func=func,
            schedule=built,
            after=tuple(dependency_name(d) for d in after),
            wants_slot="slot" in given,
            wants_data_dir="data_dir" in given,
            file=file,
            line=line,
            **values,
        )

    def _add(self, spec: JobSpec) -> None:
        other = self.jobs.get(spec.name)
        if other is not None:
            self.report(
                JobDefinitionError(
                    f"the name is already used by the job at {other.file}:{other.line}; pass name='...' to tell them apart",
                    job=spec.name,
                    file=spec.file,
                    line=spec.line,
                )
            )
            return
        self.jobs[spec.name] = spec

    def validate(self) -> list[JobDefinitionError]:
        """Check what only the whole set of jobs can tell: `after` names and cycles, then what the
        installed rules check (two jobs on one Sentry monitor)."""
        problems = graph.validate(self.jobs, self._dependencies)
        for rules in RULES:
            if rules.validate is not None:
                problems.extend(rules.validate(self.jobs))
        for problem in problems:
            self.report(problem)
        return problems


def _added_check(option: str, job: str) -> Check | None:
    """The check installed rules give `option`, for the job named `job`."""
    for rules in RULES:
        check = rules.options.get(option)
        if check is not None:
            return lambda value, what: check(value, job)
    return None
