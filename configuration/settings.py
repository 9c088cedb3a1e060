"""This deployment's settings, each declared once: variable, default, what it accepts, meaning.

The settings table of docs/operations.md is generated from this list
(``python -m configuration.settings``) and a test keeps the two in step.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jobhost.definition.durations import parse_duration
from jobhost.definition.timezones import get_zone, system_zone
from jobhost.errors import SettingError
from jobhost.web.hosts import host_name

ROOT = Path(__file__).resolve().parent.parent
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("json", "text")
MAX_WORKERS = 256  # each run holds a process and a few pipes: more would exhaust descriptors first
MAX_HISTORY_DAYS = 3650
MAX_LOG_BACKUPS = 1000
_SIZE = re.compile(r"(\d+)\s*(kb|mb|gb)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}  # supervisord's, for the same values


@dataclass(frozen=True)
class Setting:
    """One environment variable: what it accepts and means, how it is read, and where it goes in Settings."""

    variable: str
    default: str | None  # the text read when the variable is unset (None: the default_factory's value)
    accepts: str
    meaning: str
    parse: Callable[[str], Any]
    field: str  # the attribute of Settings that holds the value
    default_factory: Callable[[], Any] | None = None  # a default read from the machine, when `default` is None
    shown_default: str | None = None
    secret: bool = False  # may hold a password or key: never repeated in an error message


def _whole(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not minimum <= value <= maximum:
            raise ValueError
        return value

    return parse


def _seconds(variable: str, minimum: float, maximum: float) -> Callable[[str], float]:
    """A duration from `minimum` to `maximum` seconds (a minimum of 0 allows zero)."""

    def parse(text: str) -> float:
        seconds = parse_duration(text, what=variable, allow_zero=minimum == 0)
        if not minimum <= seconds <= maximum:  # also refuses infinity, from a number of 400 digits
            raise ValueError
        return seconds

    return parse


def _choice(choices: tuple[str, ...], fold: Callable[[str], str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if fold(text) not in choices:
            raise ValueError
        return fold(text)

    return parse


def _state_url(text: str) -> str:
    if not text.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ValueError
    if text in ("sqlite:///", "postgresql://", "postgres://"):  # a scheme naming no file or server
        raise ValueError
    return text


def _host_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", text):
        raise ValueError
    return text


def _http_addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:8377
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError
    return host, int(port)


def _http_token(text: str) -> str:
    if len(text) < 16 or any(c.isspace() for c in text):
        raise ValueError
    return text


def _http_tokens(text: str) -> tuple[tuple[str, str], ...]:
    """name=token pairs, comma-separated: each name a word (letters, digits, . _ @ -), each token as
    JOBS_HTTP_TOKEN's; no name or token twice."""
    pairs = []
    for pair in (part.strip() for part in text.split(",")):
        name, sep, token = pair.partition("=")
        if not sep or not name or not all(c.isalnum() or c in "._@-" for c in name) or not name.isascii():
            raise ValueError
        if name.lower() in ("jobhost", "http token"):  # the host's own actions, and JOBS_HTTP_TOKEN's
            raise ValueError
        pairs.append((name, _http_token(token)))
    names, tokens = [n for n, _ in pairs], [t for _, t in pairs]
    if len(set(names)) != len(names) or len(set(tokens)) != len(tokens):
        raise ValueError
    return tuple(pairs)


def _http_hosts(text: str) -> tuple[str, ...]:
    return tuple(host_name(name) for name in text.split(",") if name.strip())


def _directory(text: str) -> Path:
    path = Path(text)
    path = path if path.is_absolute() else ROOT / path
    if not path.is_dir():
        raise ValueError
    return path


def _place(text: str) -> Path:
    """A path that may not exist yet (the host makes it), relative to the repository or absolute."""
    path = Path(text)
    return path if path.is_absolute() else ROOT / path


def _log_file(text: str) -> Path:
    """A file the host can write: its directory exists and is writable by this user (said, naming it)."""
    path = Path(text)
    path = path if path.is_absolute() else ROOT / path
    try:
        if path.is_dir() or not path.name:
            raise ValueError
        if not path.parent.is_dir():
            raise SettingError("JOBS_LOG_FILE", text, f"its directory {path.parent} does not exist")
    except OSError as exc:  # a directory on the way that this user may not enter
        raise SettingError("JOBS_LOG_FILE", text, f"{_user()} cannot reach it: {exc.strerror}") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise SettingError("JOBS_LOG_FILE", text, f"its directory {path.parent} cannot be written by {_user()}")
    return path


def _user() -> str:
    try:
        return f"user {pwd.getpwuid(os.geteuid()).pw_name}"
    except KeyError:
        return f"uid {os.geteuid()}"


def _size(text: str) -> int:
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError
    size = int(match[1]) * _SIZE_UNITS[(match[2] or "").lower()]
    if size > 1024**4:
        raise ValueError
    return size


def _issues_url(text: str) -> str:
    """An http(s) address with `{run_id}` in it, the run's id put there (and nothing else to fill)."""
    if not text.startswith(("https://", "http://")) or "{run_id}" not in text or " " in text:
        raise ValueError
    try:
        text.format(run_id="x")
    except (KeyError, IndexError, ValueError):
        raise ValueError from None
    return text


def _dsn(text: str) -> str:
    from sentry_sdk.utils import BadDsn, Dsn  # the SDK loads only when a DSN is set

    try:
        Dsn(text)
    except BadDsn:
        raise ValueError from None
    return text


SETTINGS = (
    Setting(
        "JOBS_ENV_FILE",
        None,
        "a file of `NAME=value` lines",
        "more environment variables for the host and its jobs (secrets: the Ansible role writes it mode 0600); "
        "a variable set in the environment wins",
        str,
        field="env_file",
        shown_default="unset: none",
    ),
    Setting(
        "JOBS_STATE_URL",
        "sqlite:///var/jobhost.sqlite3",
        "`sqlite:///relative/path` (under the repository), `sqlite:////absolute/path`, or "
        "`postgresql://user:password@host:5432/database` (several hosts on one database)",
        "run history and job state",
        _state_url,
        field="state_url",
        secret=True,
    ),
    Setting(
        "JOBS_LOG_LEVEL",
        "INFO",
        ", ".join(LOG_LEVELS),
        "the lowest level logged",
        _choice(LOG_LEVELS, str.upper),
        field="log_level",
    ),
    Setting(
        "JOBS_LOG_FORMAT",
        "json",
        "`json` (one object a line) or `text` (for a person)",
        "log line format on stdout",
        _choice(LOG_FORMATS, str.lower),
        field="log_format",
    ),
    Setting(
        "JOBS_LOG_FILE",
        None,
        "a file path (relative to the repository or absolute) in a directory the host can write",
        "the loop writes its log there instead of stdout, rotating it itself, only between lines (the "
        "Ansible role sets it); the other commands print to stdout all the same",
        _log_file,
        field="log_file",
        shown_default="unset: stdout",
    ),
    Setting(
        "JOBS_LOG_MAX_BYTES",
        "50MB",
        "a size in bytes, or with `KB`, `MB`, `GB` (1024-based, as supervisord's), up to 1 TB; `0`: no rotation",
        "`JOBS_LOG_FILE` is rotated before a write would take it past this size: `jobs.log` becomes "
        "`jobs.log.1`, `jobs.log.1` becomes `jobs.log.2`, and so on; a longer line has a file of its own",
        _size,
        field="log_max_bytes",
    ),
    Setting(
        "JOBS_LOG_BACKUPS",
        "10",
        f"a whole number from 0 to {MAX_LOG_BACKUPS}",
        "rotated files of `JOBS_LOG_FILE` kept (the oldest is deleted)",
        _whole(0, MAX_LOG_BACKUPS),
        field="log_backups",
    ),
    Setting(
        "JOBS_MAX_WORKERS",
        "4",
        f"a whole number from 1 to {MAX_WORKERS}",
        "runs at the same time on this host",
        _whole(1, MAX_WORKERS),
        field="max_workers",
    ),
    Setting(
        "JOBS_STOP_GRACE",
        "30s",
        "seconds or a duration such as `30s`, `2m`, up to `1d`",
        "on SIGTERM, how long runs in flight get to finish before they are killed; supervisord's "
        "`stopwaitsecs` must be 30 s more (the Ansible role's `jobhost_stop_grace` and `./dev supervise` "
        "set both)",
        _seconds("JOBS_STOP_GRACE", 0, 86400),
        field="stop_grace",
    ),
    Setting(
        "JOBS_HEARTBEAT_INTERVAL",
        "30s",
        "seconds or a duration such as `30s`, `1m`, from `1s` to `1h`",
        "how often the loop records its heartbeat for `health`; it never sleeps longer",
        _seconds("JOBS_HEARTBEAT_INTERVAL", 1, 3600),
        field="heartbeat_interval",
    ),
    Setting(
        "JOBS_HOST_NAME",
        None,
        "letters, digits, `.`, `_`, `-` (up to 63)",
        "this host's name in history, heartbeats and claims; must differ between hosts sharing a state store",
        _host_name,
        field="host_name",
        default_factory=socket.gethostname,
        shown_default="the machine's host name",
    ),
    Setting(
        "JOBS_LEASE",
        "60s",
        "seconds or a duration such as `60s`, `2m`, from `3s` to `1h`",
        "several hosts on PostgreSQL: how long a run's claim lasts unrenewed (renewed every third of it) "
        "before another host takes the run over",
        _seconds("JOBS_LEASE", 3, 3600),
        field="lease",
    ),
    Setting(
        "JOBS_PREPARE_AHEAD",
        "100ms",
        "a duration such as `100ms`, `0.5s`, up to `60s`; `0` turns it off",
        "how long before its slot a run is claimed, recorded and forked, so that the job itself starts at "
        "the slot's instant; raise it where the state store is slow to answer",
        _seconds("JOBS_PREPARE_AHEAD", 0, 60),
        field="prepare_ahead",
    ),
    Setting(
        "JOBS_HISTORY_DAYS",
        "90",
        f"a whole number of days from 1 to {MAX_HISTORY_DAYS} (ten years)",
        "run history kept; older runs are pruned a batch at a time (each job's newest run is kept)",
        _whole(1, MAX_HISTORY_DAYS),
        field="history_days",
    ),
    Setting(
        "JOBS_HTTP_ADDR",
        None,
        "`address:port`, such as `127.0.0.1:8377` or `[::1]:8377` (port 0: any free port)",
        "serve the status page, `/healthz`, `/metrics` and the JSON API there; bind it to loopback unless "
        "a firewall or proxy guards it, as reading needs no token",
        _http_addr,
        field="http_addr",
        shown_default="unset: no HTTP server",
    ),
    Setting(
        "JOBS_HTTP_TOKEN",
        None,
        "16 or more characters, no spaces (for example `openssl rand -hex 32`)",
        "the bearer token the API's POST endpoints (run, pause, resume) require",
        _http_token,
        field="http_token",
        shown_default="unset: the POST endpoints answer 403",
        secret=True,
    ),
    Setting(
        "JOBS_HTTP_TOKENS",
        None,
        "`name=token` pairs, comma-separated, such as `alice=...,deploy-bot=...`: each name letters, digits "
        "and `._@-` (not `jobhost`, whose own actions the audit trail records under that name), each token "
        "as `JOBS_HTTP_TOKEN`'s, none twice",
        "bearer tokens with a name each, so every action over HTTP is recorded under who did it; accepted "
        "beside `JOBS_HTTP_TOKEN` (recorded as `http token`)",
        _http_tokens,
        field="http_tokens",
        shown_default="unset: only `JOBS_HTTP_TOKEN`",
        secret=True,
    ),
    Setting(
        "JOBS_HTTP_HOSTS",
        None,
        "host names or addresses, comma-separated, without a port, such as `jobs.example.com,jobhost-1`",
        "the names a request's `Host` may carry besides the bound address (and `localhost` when bound to "
        "loopback or to all addresses): the names a proxy or a person reaches the host by; any other is "
        "refused (400), so that no web page can read the API through DNS rebinding",
        _http_hosts,
        field="http_hosts",
        shown_default="unset: none besides the bound address",
    ),
    Setting(
        "JOBS_TIMEZONE",
        None,
        "an IANA zone such as `Europe/London`",
        "zone of `.at()` times and cron expressions that name none",
        get_zone,
        field="timezone",
        default_factory=system_zone,
        shown_default="the machine's zone (`TZ`, `/etc/localtime`), else UTC",
    ),
    Setting(
        "JOBS_DIR",
        "jobs",
        "an existing directory (relative to the repository or absolute)",
        "the package of job modules imported at start",
        _directory,
        field="jobs_dir",
    ),
    Setting(
        "JOBS_DATA_DIR",
        "var/data",
        "a directory (relative to the repository or absolute); made if missing",
        "where jobs write their files (a job that takes a `data_dir` parameter gets it); the host, `run` and "
        "`check` refuse (exit 2) one they cannot make or write in. The Ansible role sets the job user's "
        "`/var/lib/jobhost/data`",
        _place,
        field="data_dir",
    ),
    Setting(
        "JOBS_HOST_DIR",
        "var",
        "a directory (relative to the repository or absolute); made if missing",
        "where the host keeps its own files when `JOBS_STATE_URL` names a database server: its status "
        "file (for `health`) and the outcomes of runs not yet recorded, by host name (with SQLite they "
        "sit next to the state file). The Ansible role sets the job user's `/var/lib/jobhost`",
        _place,
        field="host_dir",
    ),
    Setting(
        "JOBS_IMPORT_TIMEOUT",
        "60s",
        "seconds or a duration such as `60s`, `2m`; 1 s to 1 h",
        "how long one job module may take to import; one that takes longer (or calls `sys.exit()`) is a "
        "problem named by its file, as a syntax error is",
        _seconds("JOBS_IMPORT_TIMEOUT", 1, 3600),
        field="import_timeout",
    ),
    Setting(
        "SENTRY_DSN",
        None,
        "a Sentry DSN, `https://<key>@<host>/<project>`",
        "where failures, timeouts, crashes and missed runs are reported, and Crons check-ins sent",
        _dsn,
        field="sentry_dsn",
        shown_default="unset: Sentry is off and nothing connects to it",
        secret=True,
    ),
    Setting(
        "SENTRY_ISSUES_URL",
        None,
        "an `https://` address with `{run_id}` in it, such as "
        "`https://sentry.example.com/organizations/acme/issues/?query=run_id:{run_id}`",
        "where the run page of a failed, timed-out, crashed or abandoned run links to, to find its Sentry "
        "issue (each event carries the tag `run_id`)",
        _issues_url,
        field="sentry_issues_url",
        shown_default="unset: the run page has no Sentry link",
    ),
    Setting(
        "SENTRY_ENVIRONMENT",
        "production",
        "a name such as `production`, `staging`",
        "the environment of each Sentry event and check-in",
        str,
        field="sentry_environment",
    ),
    Setting(
        "SENTRY_RELEASE",
        None,
        "a release name or a commit",
        "the release of each Sentry event",
        str,
        field="sentry_release",
        shown_default="the deployed revision: the `REVISION` file of the checkout, else its git commit",
    ),
)


@dataclass(frozen=True)
class Settings:
    env_file: str | None
    state_url: str
    log_level: str
    log_format: str
    log_file: Path | None
    log_max_bytes: int
    log_backups: int
    max_workers: int
    stop_grace: float
    heartbeat_interval: float
    host_name: str
    lease: float
    prepare_ahead: float
    history_days: int
    http_addr: tuple[str, int] | None
    http_token: str | None
    http_tokens: tuple[tuple[str, str], ...] | None
    http_hosts: tuple[str, ...] | None
    timezone: ZoneInfo
    jobs_dir: Path
    data_dir: Path
    host_dir: Path
    import_timeout: float
    sentry_dsn: str | None
    sentry_issues_url: str | None
    sentry_environment: str
    sentry_release: str | None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every setting; raise SettingError naming the first bad variable. (The deployment puts
    JOBS_ENV_FILE's values into the environment first: `apply_env_file`.)"""
    environ = os.environ if environ is None else environ
    return Settings(**{setting.field: read_setting(setting.variable, environ) for setting in SETTINGS})


def read_setting(variable: str, environ: Mapping[str, str]) -> Any:
    """One setting's value (its default if unset); SettingError if its value is bad."""
    [setting] = [s for s in SETTINGS if s.variable == variable]
    raw = environ.get(setting.variable, "").strip()
    if not raw:
        return _unset(setting)
    try:
        raw.encode("utf-8")  # bytes that are not UTF-8 arrive as surrogate escapes
        return setting.parse(raw)
    except (ValueError, TypeError):
        shown = None if setting.secret else raw
        raise SettingError(setting.variable, shown, f"expected {setting.accepts}") from None


def _unset(setting: Setting) -> Any:
    """The value of a setting left unset."""
    if setting.default is not None:
        return setting.parse(setting.default)
    return None if setting.default_factory is None else setting.default_factory()


def docs_settings_table() -> str:
    """The settings table of docs/operations.md, in Markdown: the docs say what the code accepts."""
    lines = ["| variable | default | accepts | meaning |", "| --- | --- | --- | --- |"]
    for s in SETTINGS:
        default = s.shown_default or f"`{s.default}`"
        lines.append(f"| `{s.variable}` | {default} | {s.accepts} | {s.meaning} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(docs_settings_table())  # noqa: T201 - this is the command's output
