"""What only the whole set of jobs can tell: the jobs `after=` names, and cycles among them."""

from __future__ import annotations

import dataclasses
import difflib

from jobhost.definition.spec import JobSpec
from jobhost.errors import JobDefinitionError

Dependency = tuple[str, object, str, int]  # (job, what its after= gave: a name or a function, file, line)


def validate(jobs: dict[str, JobSpec], dependencies: list[Dependency]) -> list[JobDefinitionError]:
    """Resolve each job's `after` to job names (in `jobs`, in place) and find what is wrong with them."""
    problems: list[JobDefinitionError] = []
    by_function = {id(spec.func): spec.name for spec in jobs.values()}
    resolved: dict[str, list[str]] = {}
    for name, dependency, file, line in dependencies:
        if name not in jobs:
            continue
        # A function given to after= stands for the job it was registered as (name= included).
        target = by_function.get(id(dependency), dependency_name(dependency))
        resolved.setdefault(name, []).append(target)
        if target not in jobs:
            close = difflib.get_close_matches(str(target), list(jobs), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(JobDefinitionError(f"after={target!r} names no job{hint}", job=name, file=file, line=line))
    for name, targets in resolved.items():
        jobs[name] = dataclasses.replace(jobs[name], after=tuple(targets))
    for cycle in cycles({n: s.after for n, s in jobs.items()}):
        spec = jobs[cycle[0]]
        chain = " -> ".join([*cycle, cycle[0]])
        problems.append(
            JobDefinitionError(f"after= makes a cycle: {chain}", job=spec.name, file=spec.file, line=spec.line)
        )
    return problems


def dependency_name(dependency: object) -> str:
    """The job name `after=` means, before the registry knows every job: a function stands for its name."""
    if callable(dependency):
        return str(getattr(dependency, "__name__", dependency))
    return str(dependency)


def cycles(graph: dict[str, tuple[str, ...]]) -> list[list[str]]:
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
