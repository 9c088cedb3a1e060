"""Render the shipped supervisord program (deploy/supervisor/jobs.conf.j2) for a local run.

`./dev supervise` uses it to run the example jobs under a real supervisord
from the repository, with exactly the program production gets; the Ansible
role renders the same file with its own values.

    python -m configuration.supervisor DIR   writes DIR/supervisord.conf, DIR/jobs.conf and, once, DIR/jobs.env
"""

from __future__ import annotations

import getpass
import math
import os
import re
import secrets
import sys
from pathlib import Path

from configuration.env_file import read_env_file
from configuration.settings import ROOT, read_setting

TEMPLATE = ROOT / "deploy" / "supervisor" / "jobs.conf.j2"
_PLACEHOLDER = re.compile(r"{{\s*(\w+)\s*}}")

SUPERVISORD = """\
; A supervisord of our own for a local run: socket, pid and logs under {here}.
[unix_http_server]
file=%(here)s/supervisor.sock
chmod=0700

[supervisord]
logfile=%(here)s/supervisord.log
pidfile=%(here)s/supervisord.pid
childlogdir=%(here)s

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://%(here)s/supervisor.sock

[include]
files = jobs.conf
"""


def render(values: dict[str, str], template: Path = TEMPLATE) -> str:
    """Substitute each ``{{ name }}``; a name without a value is an error, not a blank."""
    text = template.read_text()
    missing = sorted({name for name in _PLACEHOLDER.findall(text) if name not in values})
    if missing:
        raise KeyError(f"{template.name} needs values for: {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def stop_wait_secs(stop_grace: float) -> int:
    """supervisord's stopwaitsecs for a host with this JOBS_STOP_GRACE: the grace, the host's kill
    of what is left (SIGTERM, SIGKILL 5 s later) and 25 s to record it and exit; the Ansible role
    computes the same (vars/main.yml)."""
    return math.ceil(stop_grace) + 5 + 25


LOCAL_SETTINGS = """\
# The settings of `./dev supervise`: NAME=value lines (docs/operations.md has them all). The host
# reads this file at each start, so `supervisorctl restart jobs` picks up a change. Its secrets stay
# here: the file is yours alone (mode 0600), and not in the repository (var/ is ignored).
#
# The status page, /healthz, /metrics and the API, on this machine only:
JOBS_HTTP_ADDR=127.0.0.1:8377
# The API's bearer token, made for this checkout: paste it in the page's token box to act from it.
JOBS_HTTP_TOKEN={token}
# JOBS_STOP_GRACE=30s
# SENTRY_DSN=https://<key>@<host>/<project>
"""


def local_settings(directory: Path) -> Path:
    """The settings file of a local run, written with a status page and a fresh token the first time."""
    path = directory / "jobs.env"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(LOCAL_SETTINGS.format(token=secrets.token_hex(24)))
    return path


def write_local(directory: Path, python: str = sys.executable, stop_grace: float | None = None) -> Path:
    """Write a supervisord.conf, the jobs program and (once) a settings file for this checkout;
    return the supervisord.conf. `stop_grace`: the JOBS_STOP_GRACE the host will have (default: the
    settings file's, else the environment's, else 30 s)."""
    settings = local_settings(directory)
    if stop_grace is None:  # supervisord passes its environment on, which wins over the file, as in the host
        from_file = read_env_file({"JOBS_ENV_FILE": str(settings)})
        stop_grace = read_setting("JOBS_STOP_GRACE", {**from_file, **os.environ})
    directory.mkdir(parents=True, exist_ok=True)
    program = render(
        {
            "program": "jobs",
            "python": python,
            "directory": str(ROOT),
            "user": getpass.getuser(),
            "output_file": str(directory / "jobs.log"),  # the JSON log, unless JOBS_LOG_FILE says otherwise
            "env_file": str(settings),  # the file the host reads at each start
            "output_max_bytes": "50MB",
            "output_backups": "10",
            "stop_wait_secs": str(stop_wait_secs(stop_grace)),
        }
    )
    (directory / "jobs.conf").write_text(program)
    config = directory / "supervisord.conf"
    config.write_text(SUPERVISORD.format(here=directory))
    return config


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "var" / "supervisor"
    print(write_local(target.resolve()))  # noqa: T201 - the command's output
