"""The ``@job`` decorator and the registry it fills.

The decorator validates everything when the module is imported, records a
JobSpec, binds the schedule onto the registry's own ``schedule.Scheduler``
(never the library's global one) and returns the function unchanged, so a
test can still call it directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import difflib
import inspect
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import schedule as schedule_lib

from jobhost.definition.durations import parse_duration
from jobhost.definition.schedules import Schedule, build_schedule
from jobhost.definition.timezones import system_zone
from jobhost.errors import JobDefinitionError, JobhostError, display_path
from jobhost.monitors import DEFAULT_MARGIN, check_slug, slug_for

F = TypeVar("F", bound=Callable[..., Any])

CATCHUP = ("latest", "all", "none")
OVERLAP = ("skip", "queue", "allow")
ISOLATION = ("process", "thread")
GIVEN = ("slot", "data_dir")  # parameters the host fills in, by name: the slot, and JOBS_DATA_DIR
DEFAULT_TIMEOUT = 3600.0
DEFAULT_CATCHUP_WINDOW = 7 * 86400.0
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class CheckedJob(schedule_lib.Job):
    """A `schedule` Job whose DSL mistakes (``.at("25:00")``, ``every(2).monday``) are kept for
    ``@job`` to report with the job's name, file and line, instead of stopping the import of the
    whole module at the first one."""

    error: str | None = None
    _GUARDED = frozenset({"at", "to", "until", "tag"})

    def __getattribute__(self, name: str) -> Any:
        try:
            value = super().__getattribute__(name)
        except (schedule_lib.ScheduleError, ValueError, TypeError) as exc:  # a unit property refused
            self._keep(f".{name}: {exc}")
            return self
        if name not in CheckedJob._GUARDED:
            return value

        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return value(*args, **kwargs)
            except (schedule_lib.ScheduleError, ValueError, TypeError) as exc:
                exc = str(exc).replace("({} is not", "(the hour is not")  # schedule 1.2.2 leaves {} unfilled
                shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
                self._keep(f".{name}({shown}): {exc}")
                return self

        return guarded

    def _keep(self, message: str) -> None:
        if object.__getattribute__(self, "error") is None:
            object.__setattr__(self, "error", message)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One registered job: the function, its schedule and its validated options."""

    name: str
    func: Callable[..., Any]
    schedule: Schedule
    timeout: float | None = DEFAULT_TIMEOUT
    retries: int = 0
    retry_delay: float = 60.0
    catchup: str = "latest"
    overlap: str = "skip"
    after: tuple[str, ...] = ()
    isolation: str = "process"
    catchup_window: float = DEFAULT_CATCHUP_WINDOW
    monitor: str | None = None  # the Sentry Crons monitor slug; None: no monitor
    checkin_margin: float = DEFAULT_MARGIN
    report_each_attempt: bool = False  # a Sentry event for every failed attempt, not only the last
    wants_slot: bool = False
    wants_data_dir: bool = False
    file: str = "?"
    line: int = 0

    def call(self, slot: dt.datetime, data_dir: Path | None = None) -> object:
        """Call the function, with `slot` and `data_dir` (the host's JOBS_DATA_DIR) if it asks for them."""
        given: dict[str, object] = {"slot": slot} if self.wants_slot else {}
        if self.wants_data_dir:
            if data_dir is None:
                raise RuntimeError(f"job {self.name!r} takes `data_dir`, but this host was given no data directory")
            given["data_dir"] = data_dir
        return self.func(**given)

    def options(self) -> dict[str, Any]:
        """The options as plain data, for `list --json`."""
        return {
            "timeout": self.timeout,
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            "catchup": self.catchup,
            "overlap": self.overlap,
            "after": list(self.after),
            "isolation": self.isolation,
            "catchup_window": self.catchup_window,
            "monitor": self.monitor,
            "checkin_margin": self.checkin_margin,
            "report_each_attempt": self.report_each_attempt,
        }


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
    _dependencies: list[tuple[str, object, str, int]] = field(default_factory=list)

    def every(self, interval: int = 1) -> schedule_lib.Job:
        """The `schedule` DSL (``every(10).minutes``), bound to this registry's scheduler."""
        return CheckedJob(interval, self.scheduler)

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
        """Register the decorated function to run on `schedule` (see README)."""
        caller = sys._getframe(1)
        file, line = display_path(caller.f_code.co_filename), caller.f_lineno
        if callable(schedule) and not isinstance(schedule, schedule_lib.Job):
            where = JobDefinitionError(
                "@job needs a schedule, for example @job(every(10).minutes)",
                job=getattr(schedule, "__name__", None),
                file=file,
                line=line,
            )
            self.report(where)
            return schedule  # type: ignore[return-value]

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
        unknown = sorted(set(options) - _OPTION_NAMES)
        if unknown:
            hints = []
            for option in unknown:
                close = difflib.get_close_matches(option, sorted(_OPTION_NAMES), n=1)
                hints.append(f"{option!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise fail(
                f"unknown option {', '.join(hints)}; the options are {', '.join(sorted(_OPTION_NAMES | {'name'}))}"
            )
        if isinstance(schedule, CheckedJob) and schedule.error:
            raise fail(f"every({schedule.interval}){schedule.error}")
        try:
            built = build_schedule(schedule, self.default_zone)
        except JobhostError as exc:
            raise fail(str(exc)) from exc
        checks: dict[str, Callable[[], Any]] = {
            "timeout": lambda: _timeout(options.get("timeout", DEFAULT_TIMEOUT)),
            "retries": lambda: _whole(options.get("retries", 0), "retries"),
            "retry_delay": lambda: parse_duration(options.get("retry_delay", 60), what="retry_delay", allow_zero=True),
            "catchup": lambda: _choice(options.get("catchup", "latest"), "catchup", CATCHUP),
            "overlap": lambda: _choice(options.get("overlap", "skip"), "overlap", OVERLAP),
            "isolation": lambda: _choice(options.get("isolation", "process"), "isolation", ISOLATION),
            "catchup_window": lambda: parse_duration(
                options.get("catchup_window", DEFAULT_CATCHUP_WINDOW), what="catchup_window"
            ),
            "monitor": lambda: slug_for(name) if options.get("monitor") is None else check_slug(options["monitor"]),
            "checkin_margin": lambda: parse_duration(
                options.get("checkin_margin", DEFAULT_MARGIN), what="checkin_margin"
            ),
            "report_each_attempt": lambda: _flag(options.get("report_each_attempt", False), "report_each_attempt"),
        }
        values, errors = {}, []
        for option, check in checks.items():  # every bad option at once, not only the first
            try:
                values[option] = check()
            except ValueError as exc:
                errors.append(str(exc))
        if errors:
            raise fail("; ".join(errors))
        after = options.get("after", ())
        if isinstance(after, str) or callable(after):
            after = (after,)
        if not isinstance(after, list | tuple):
            raise fail(f"after must be a job name or a list of them, not {after!r}")
        given = _given_parameters(func)
        if isinstance(given, str):
            raise fail(given)
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
            after=tuple(_dependency_name(d) for d in after),
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
        """Check what only the whole set of jobs can tell: `after` names and cycles."""
        problems: list[JobDefinitionError] = []
        by_function = {id(spec.func): spec.name for spec in self.jobs.values()}
        resolved: dict[str, list[str]] = {}
        for name, dependency, file, line in self._dependencies:
            if name not in self.jobs:
                continue
            # A function given to after= stands for the job it was registered as (name= included).
            target = by_function.get(id(dependency), _dependency_name(dependency))
            resolved.setdefault(name, []).append(target)
            if target not in self.jobs:
                close = difflib.get_close_matches(str(target), list(self.jobs), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(
                    JobDefinitionError(f"after={target!r} names no job{hint}", job=name, file=file, line=line)
                )
        for name, targets in resolved.items():
            self.jobs[name] = dataclasses.replace(self.jobs[name], after=tuple(targets))
        for cycle in _cycles({n: s.after for n, s in self.jobs.items()}):
            spec = self.jobs[cycle[0]]
            chain = " -> ".join([*cycle, cycle[0]])
            problems.append(
                JobDefinitionError(f"after= makes a cycle: {chain}", job=spec.name, file=spec.file, line=spec.line)
            )
        problems.extend(self._shared_monitors())
        for problem in problems:
            self.report(problem)
        return problems

    def _shared_monitors(self) -> list[JobDefinitionError]:
        """Two jobs checking in to one Sentry monitor would hide each other's failures. A slug
        derived from a name that another job's slug already has ('etl.daily', 'etl-daily') gets
        the name's hash; two slugs given with monitor= are a definition error."""
        problems, owners = [], {}
        for name, spec in list(self.jobs.items()):
            if spec.monitor is None:
                continue
            other = owners.setdefault(spec.monitor, spec)
            if other is spec:
                continue
            if spec.monitor == slug_for(name):  # derived, not chosen: make it unique
                spec = self.jobs[name] = dataclasses.replace(spec, monitor=slug_for(name, unique=True))
                owners[spec.monitor] = spec
                continue
            problems.append(
                JobDefinitionError(
                    f"its Sentry monitor slug {spec.monitor!r} is also the job {other.name!r}'s "
                    f"({other.file}:{other.line}); give one of them monitor='another-slug'",
                    job=spec.name,
                    file=spec.file,
                    line=spec.line,
                )
            )
        return problems


_OPTION_NAMES = {
    "timeout",
    "retries",
    "retry_delay",
    "catchup",
    "catchup_window",
    "overlap",
    "after",
    "isolation",
    "monitor",
    "checkin_margin",
    "report_each_attempt",
}


def _timeout(value: object) -> float | None:
    return None if value is None else parse_duration(value, what="timeout")


def _whole(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a whole number of at least 0, not {value!r}")
    return value


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be True or False, not {value!r}")
    return value


def _choice(value: object, what: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{what}={value!r} is not one of: {', '.join(repr(c) for c in choices)}")
    return str(value)


def _dependency_name(dependency: object) -> str:
    if callable(dependency):
        return str(getattr(dependency, "__name__", dependency))
    return str(dependency)


def _given_parameters(func: Callable[..., Any]) -> frozenset[str] | str:
    """Which of the parameters the host gives (`slot`, `data_dir`) the function takes; a message when
    it needs arguments we cannot give."""
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return frozenset()
    for parameter in parameters.values():
        required = parameter.default is inspect.Parameter.empty and parameter.kind not in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        )
        if required and parameter.name not in GIVEN:
            return (
                f"the function's parameter {parameter.name!r} has no value to be given; a job takes no arguments, "
                "or `slot`, `data_dir`"
            )
    return frozenset(GIVEN) & set(parameters)


def _cycles(graph: dict[str, tuple[str, ...]]) -> list[list[str]]:
    """Each cycle of the `after` graph once, found by depth-first search."""
    found: list[list[str]] = []
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt) :])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found
