"""Import every module of the jobs package, so that their ``@job`` decorators run.

An import that fails (syntax error, a missing library, an exception at module
level) becomes a problem naming the file and line; the other modules still load.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import pkgutil
import sys
import traceback
from pathlib import Path
from types import ModuleType

from jobhost.errors import JobDefinitionError, display_path
from jobhost.output import LineSplitter
from jobhost.registry import Registry

logger = logging.getLogger("jobhost.import")


def discover(directory: Path, registry: Registry) -> list[JobDefinitionError]:
    """Import the package at `directory` and all its modules; return every problem found.

    Modules whose name starts with ``_`` or ``test_`` are not imported (helpers and tests).
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
    with registry.collecting():
        root = _import(package, directory / "__init__.py", registry)
        if root is not None:
            if not _is_inside(root, directory):
                registry.problems.append(
                    JobDefinitionError(
                        f"the jobs package name {package!r} is taken by another module ({getattr(root, '__file__', None)}); "
                        "rename the jobs directory"
                    )
                )
            else:
                _import_tree(root, registry)
        registry.validate()
    return registry.problems


def _import_tree(package: ModuleType, registry: Registry) -> None:
    """Import the package's modules and subpackages, depth first, skipping ``_*`` and ``test_*``
    before importing them (a walk by pkgutil would import skipped subpackages to look inside)."""
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith(("_", "test_")):
            continue
        name = f"{package.__name__}.{info.name}"
        location = Path(info.module_finder.path) / (info.name + ("/__init__.py" if info.ispkg else ".py"))  # type: ignore[union-attr]
        module = _import(name, location, registry)
        if module is not None and info.ispkg:
            _import_tree(module, registry)


def _is_inside(module: ModuleType, directory: Path) -> bool:
    paths = [Path(p).resolve() for p in getattr(module, "__path__", [])]
    return directory in paths


class _ImportOutput(io.TextIOBase):
    """What a job module prints while it is imported, as log lines (the stream stays JSON)."""

    def __init__(self, module: str, stream: str):
        self.module, self.stream, self._splitter = module, stream, LineSplitter()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._emit(self._splitter.feed(text.encode("utf-8", "backslashreplace")))
        return len(text)

    def close(self) -> None:
        self._emit(self._splitter.finish())
        super().close()

    def _emit(self, lines: list[str]) -> None:
        for line in lines:
            logger.info(line, extra={"job_module": self.module, "stream": self.stream})


def _import(name: str, location: Path, registry: Registry) -> ModuleType | None:
    out, err = _ImportOutput(name, "stdout"), _ImportOutput(name, "stderr")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return importlib.import_module(name)
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
    frame = (inside or frames or [None])[-1]
    if frame is None:
        return display_path(str(location)), None
    return display_path(frame.filename), frame.lineno
