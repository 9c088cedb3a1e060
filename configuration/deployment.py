"""Builds what the engine needs for this deployment: settings, then logging, then Sentry."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from configuration.env_file import apply_env_file
from configuration.log_setup import configure_logging
from configuration.sentry_setup import start_sentry
from configuration.settings import ROOT, load_settings
from jobhost.cli import HostSettings
from jobhost.hostconfig import HostConfig, HttpConfig


def configure(*, log_to_stdout: bool) -> HostSettings:
    """Read the settings, set up logging, and hand the engine what it needs.

    `log_to_stdout` is for the commands whose output *is* the log (the loop, `run`);
    the others log to stderr so their stdout stays machine-readable.
    """
    apply_env_file()
    settings = load_settings()
    os.environ.pop("JOBS_HTTP_TOKEN", None)  # the host's alone: the jobs it forks inherit the environment
    configure_logging(
        settings.log_level, settings.log_format, None if log_to_stdout else sys.stderr, settings.host_name
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
            results_dir=_results_dir(settings.state_url),
        ),
        reporters=lambda: start_sentry(settings),
        http=HttpConfig(*settings.http_addr, settings.http_token, settings.http_hosts or ())
        if settings.http_addr
        else None,
    )


def _results_dir(state_url: str) -> Path:
    """Where runs leave their outcome until it is recorded: next to the SQLite state file, or in
    var/ of the checkout for a database server (each host keeps its own)."""
    if not state_url.startswith("sqlite:///"):
        return ROOT / "var" / "jobhost.runs"
    path = Path(state_url.removeprefix("sqlite:///"))
    path = path if path.is_absolute() else ROOT / path
    return path.with_name(path.name + ".runs")
