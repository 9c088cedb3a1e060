"""The deployment's environment file: secrets and settings that must not sit in the
supervisord config or a process's command line.

`JOBS_ENV_FILE` names a file of `NAME=value` lines (the Ansible role writes it
mode 0600, owned by the job user). Its values become environment variables of
the host, and so of every job; a variable already set in the environment wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

from jobhost.errors import SettingError

VARIABLE = "JOBS_ENV_FILE"


def read_env_file(environ: Mapping[str, str]) -> dict[str, str]:
    """The values of the file `JOBS_ENV_FILE` names (none when it is unset or empty)."""
    path = environ.get(VARIABLE, "").strip()
    if not path:
        return {}
    from dotenv import dotenv_values  # here: a host without the file does not load it

    try:
        with open(path, encoding="utf-8") as stream:
            values = dotenv_values(stream=stream, interpolate=False)  # a secret may contain "$"
    except OSError as exc:
        raise SettingError(VARIABLE, path, f"a readable file of NAME=value lines ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise SettingError(VARIABLE, path, "a UTF-8 text file of NAME=value lines") from None
    return {name: value for name, value in values.items() if value is not None}


def with_env_file(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with the file's values under it (the environment wins)."""
    return {**read_env_file(environ), **environ}


def apply_env_file(environ: MutableMapping[str, str] = os.environ) -> None:
    """Put the file's values into the process environment, for the host and its jobs."""
    for name, value in read_env_file(environ).items():
        environ.setdefault(name, value)
