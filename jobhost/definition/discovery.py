"""Import every module of the jobs package, so that their ``@job`` decorators run.

An import that fails (syntax error, a missing library, an exception at module
level, `sys.exit()` or `os._exit()`) becomes a problem naming the file and line;
the other modules still load. So does an import that takes longer than its bound:
an alarm interrupts it where it waits or loops (a sleep, a socket read, `while
True`), though not native code that never gives the interpreter back.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pkgutil
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType, ModuleType
from typing import NoReturn

from jobhost.definition.durations import format_duration
from jobhost.definition.registry import Registry
from jobhost.errors import JobDefinitionError, display_path
from jobhost.output import LineWriter

logger = logging.getLogger("jobhost.import")
Importing = Callable[[Path], None]  # told of each module before it is imported


class ImportTimedOut(BaseException):
    """Raised into a job module's import that outlasted its bound: not an Exception, so that the
    module's own `except Exception` does not swallow it."""


class ExitAtImport(BaseException):
    """`os._exit()` called by a job module while it is imported (which would end the host unheard)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def discover(
    directory: Path, registry: Registry, timeout: float | None = None, importing: Importing | None = None
) -> list[JobDefinitionError]:
    """Import the package at `directory` and all its modules; return every problem found.

    Modules whose name starts with ``_`` or ``test_`` are not imported (helpers and tests).
    `timeout`: seconds each module may take (None: no bound).
    """
    directory = directory.resolve()
    if not directory.is_dir():
        problem = JobDefinitionError(f"the jobs directory {str(directory)!r} does not exist")
        registry.problems.append(problem)
        return [problem]
    parent = str(directory.parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    package = directory.name
    bound = _Bound(timeout, importing)
    with registry.collecting(), _exit_raises():
        root = _import(package, directory / "__init__.py", registry, bound)
        if root is not None:
            if not _is_inside(root, directory):
                registry.problems.append(
                    JobDefinitionError(
                        f"the jobs package name {package!r} is taken by another module ({getattr(root, '__file__', None)}); "
                        "rename the jobs directory"
                    )
                )
            else:
                _import_tree(root, registry, bound)
        registry.validate()
    return registry.problems


def _import_tree(package: ModuleType, registry: Registry, bound: _Bound) -> None:
    """Import the package's modules and subpackages, depth first, skipping ``_*`` and ``test_*``
    before importing them (a walk by pkgutil would import skipped subpackages to look inside)."""
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith(("_", "test_")):
            continue
        name = f"{package.__name__}.{info.name}"
        location = Path(info.module_finder.path) / (info.name + ("/__init__.py" if info.ispkg else ".py"))  # type: ignore[union-attr]
        module = _import(name, location, registry, bound)
        if module is not None and info.ispkg:
            _import_tree(module, registry, bound)


def _is_inside(module: ModuleType, directory: Path) -> bool:
    paths = [Path(p).resolve() for p in getattr(module, "__path__", [])]
    return directory in paths


def _import_output(module: str, stream: str) -> LineWriter:
    """What a job module prints while it is imported, as log lines (the stream stays JSON)."""
    return LineWriter(lambda line: logger.info(line, extra={"job_module": module, "stream": stream}))


class _Bound:
    """Each module's import under an alarm of `timeout` seconds (repeated each second after, should
    the module catch it), in the main thread only, where signals are delivered."""

    def __init__(self, timeout: float | None, importing: Importing | None):
        self.timeout, self.importing = timeout, importing
        self._armed = False

    @contextlib.contextmanager
    def __call__(self, location: Path) -> Iterator[None]:
        if self.importing is not None:
            self.importing(location)
        if self.timeout is None or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGALRM, self._expired)
        self._armed = True
        signal.setitimer(signal.ITIMER_REAL, self.timeout, 1.0)
        try:
            yield
        finally:
            self._armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def _expired(self, signum: int, frame: FrameType | None) -> None:
        if self._armed:
            raise ImportTimedOut


@contextlib.contextmanager
def _exit_raises() -> Iterator[None]:
    """While job modules are imported, `os._exit()` in this process raises ExitAtImport instead of
    ending it (a process a module forks exits as asked)."""
    real, pid = os._exit, os.getpid()

    def _exit(status: int) -> NoReturn:
        if os.getpid() != pid or os._exit is not _exit:  # a forked child, or after discovery (kept by a module)
            real(status)
        raise ExitAtImport(status)

    os._exit = _exit
    try:
        yield
    finally:
        os._exit = real


def _import(name: str, location: Path, registry: Registry, bound: _Bound) -> ModuleType | None:
    out, err = _import_output(name, "stdout"), _import_output(name, "stderr")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), bound(location):
            return importlib.import_module(name)
    except ImportTimedOut as exc:
        file, line = _innermost_frame_in(exc, location)
        registry.problems.append(
            JobDefinitionError(
                f"importing {name} did not finish within {format_duration(bound.timeout or 0)} "
                "(JOBS_IMPORT_TIMEOUT): a job module should define jobs, and leave the work to them",
                file=file,
                line=line,
            )
        )
    except (SystemExit, ExitAtImport) as exc:
        file, line = _innermost_frame_in(exc, location)
        call = "sys.exit" if isinstance(exc, SystemExit) else "os._exit"
        registry.problems.append(
            JobDefinitionError(f"importing {name} called {call}({exc.code!r}) at import", file=file, line=line)
        )
    except SyntaxError as exc:
        registry.problems.append(
            JobDefinitionError(
                f"{type(exc).__name__}: {exc.msg}", file=display_path(exc.filename or str(location)), line=exc.lineno
            )
        )
    except JobDefinitionError as exc:
        registry.problems.append(exc)
    except Exception as exc:  # noqa: BLE001 - an import must never take the others down
        file, line = _innermost_frame_in(exc, location)
        registry.problems.append(
            JobDefinitionError(f"importing {name} failed: {type(exc).__name__}: {exc}", file=file, line=line)
        )
    finally:
        out.close()
        err.close()
    return None


def _innermost_frame_in(exc: BaseException, location: Path) -> tuple[str, int | None]:
    """The deepest traceback line inside the jobs package (else inside the module)."""
    frames = traceback.extract_tb(exc.__traceback__)
    package_dir = str(location.parent)
    inside = [f for f in frames if f.filename.startswith(package_dir)]
    frame = (inside or frames or [None])[-1]  # type: ignore[list-item]
    if frame is None:
        return display_path(str(location)), None
    return display_path(frame.filename), frame.lineno
