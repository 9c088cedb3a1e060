"""Builds what the engine needs for this deployment: settings, then logging, then Sentry, handed over
as the engine's own contract (jobhost.config.HostSettings), in one step from the settings."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from configuration.env_file import apply_env_file, with_env_file
from configuration.environ_block import forget_variable
from configuration.log_setup import JsonLineFormatter, configure_logging
from configuration.log_stream import LogFile
from configuration.sentry_setup import deployed_revision, refused_start_reporter, start_sentry
from configuration.settings import ROOT, Settings, load_settings, read_setting
from jobhost.config import HostConfig, HostSettings, HttpConfig, StartWitnesses
from jobhost.errors import SettingError
from jobhost.store import sqlite_path


def configure(*, log_to_stdout: bool, loop: bool = False) -> HostSettings:
    """Read the settings, set up logging, and hand the engine its HostSettings.

    `log_to_stdout` is for the commands whose output *is* the log (the loop, `run`);
    the others log to stderr so their stdout stays machine-readable. Only the forever
    `loop` writes JOBS_LOG_FILE: a command run by a person prints where they can see it.
    """
    apply_env_file()
    settings = load_settings()
    forget_variable("JOBS_HTTP_TOKEN")  # the host's alone: the jobs it forks inherit the environment
    forget_variable("JOBS_HTTP_TOKENS")
    configure_logging(
        settings.log_level,
        settings.log_format,
        None if log_to_stdout else sys.stderr,
        settings.host_name,
        _log_file(settings) if loop and log_to_stdout else None,
    )
    return HostSettings(
        state_url=settings.state_url,
        base_dir=ROOT,
        jobs_dir=settings.jobs_dir,
        timezone=settings.timezone,
        host=HostConfig(
            max_workers=settings.max_workers,
            stop_grace=settings.stop_grace,
            heartbeat_interval=settings.heartbeat_interval,
            hostname=settings.host_name,
            lease=settings.lease,
            prepare_ahead=settings.prepare_ahead,
            capture_stray_output=log_to_stdout,
            history_days=settings.history_days,
            results_dir=_results_dir(settings.state_url, settings.host_dir),
            data_dir=settings.data_dir,
        ),
        reporters=lambda: start_sentry(settings),
        http=HttpConfig(
            *settings.http_addr,
            settings.http_token,
            settings.http_hosts or (),
            settings.http_tokens or (),
            settings.sentry_issues_url if settings.sentry_dsn else None,
        )
        if settings.http_addr
        else None,
        status_file=status_file(settings.state_url, settings.host_name, settings.host_dir),
        import_timeout=settings.import_timeout,
        release=lambda: deployed_revision(ROOT),
        log_alone=_log_alone(settings) if loop and log_to_stdout and settings.log_file is not None else None,
    )


def _log_alone(settings: Settings) -> Callable[[], None]:
    """Logging in a process that outlives the loop (a run's keeper): the log file, written by a
    thread of its own and rotated at its size as the loop rotates it (under one lock: see LogFile),
    so that a chatty run kept on under a quiet host does not take it past JOBS_LOG_MAX_BYTES."""

    def log_alone() -> None:
        assert settings.log_file is not None
        configure_logging(
            settings.log_level,
            settings.log_format,
            None,
            settings.host_name,
            LogFile(settings.log_file, settings.log_max_bytes, settings.log_backups),
        )

    return log_alone


def _log_file(settings: Settings) -> LogFile | None:
    """The loop's log file, open (its directory was checked with the settings; this says the rest)."""
    if settings.log_file is None:
        return None
    try:
        return LogFile(settings.log_file, settings.log_max_bytes, settings.log_backups)
    except OSError as exc:
        raise SettingError(
            "JOBS_LOG_FILE", str(settings.log_file), f"cannot be opened: {exc.strerror or exc}"
        ) from None


def witnesses() -> StartWitnesses:
    """Who hears of a refused start, and the format a bad setting is said in before logging is set
    up: read setting by setting, so that one bad setting (the reason, perhaps) leaves the others
    usable; a bad one among them is left out."""
    try:
        environ = with_env_file(os.environ)
    except SettingError:
        environ = dict(os.environ)

    def read(variable: str) -> Any:
        try:
            return read_setting(variable, environ)
        except SettingError:
            return None

    state_url, host_name, interval = read("JOBS_STATE_URL"), read("JOBS_HOST_NAME"), read("JOBS_HEARTBEAT_INTERVAL")
    host_dir = read("JOBS_HOST_DIR") or read_setting("JOBS_HOST_DIR", {})
    dsn, environment, release = read("SENTRY_DSN"), read("SENTRY_ENVIRONMENT"), read("SENTRY_RELEASE")
    log_format = read("JOBS_LOG_FORMAT")  # a bad one (perhaps the reason) leaves the stream JSON
    return StartWitnesses(
        status_file=status_file(state_url, host_name, host_dir) if state_url and host_name else None,
        hostname=host_name or "",
        heartbeat_interval=interval or 30.0,
        report=refused_start_reporter(dsn, environment or "production", release, host_name or "") if dsn else None,
        log_line=None if log_format == "text" else _json_line,
    )


def _json_line(message: str, event: str) -> str:
    """A critical record of the host's logger as the JSON stream carries it, for a line said before
    logging is set up: through the formatter configure_logging installs."""
    record = logging.makeLogRecord(
        {"name": "jobhost", "levelno": logging.CRITICAL, "levelname": "CRITICAL", "msg": message, "event": event}
    )
    return JsonLineFormatter().format(record)


def status_file(state_url: str, host_name: str, host_dir: Path) -> Path:
    """Where the loop says what it does, for `health`: next to the SQLite state file (on its file
    system, whose faults it reports), or in JOBS_HOST_DIR, by host name, for a database server (not
    in the release: a deployed release is root's, and each release would have its own)."""
    path = sqlite_path(state_url, ROOT)
    if path is None:
        return host_dir / f"jobhost.{host_name}.status"
    return path.with_name(path.name + ".status")


def _results_dir(state_url: str, host_dir: Path) -> Path:
    """Where runs leave their outcome until it is recorded: next to the SQLite state file, or in
    JOBS_HOST_DIR for a database server (each host keeps its own)."""
    path = sqlite_path(state_url, ROOT)
    if path is None:
        return host_dir / "jobhost.runs"
    return path.with_name(path.name + ".runs")
