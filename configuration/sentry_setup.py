"""Sentry for this deployment: on only when SENTRY_DSN is set, with this checkout's release."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from configuration.settings import ROOT, Settings

if TYPE_CHECKING:
    from jobhost.observe.events import Reporter


def start_sentry(settings: Settings, root: Path = ROOT) -> list[Reporter]:
    """Start the SDK and return its run reporter; nothing (and no connection) without a DSN."""
    if not settings.sentry_dsn:
        return []
    from jobhost.observe.sentry.reporter import init_sentry  # only a host that reports pays for the import

    release = settings.sentry_release or deployed_revision(root)
    return [init_sentry(settings.sentry_dsn, settings.sentry_environment, release)]


def refused_start_reporter(
    dsn: str, environment: str, release: str | None, host_name: str, root: Path = ROOT
) -> Callable[[str, Sequence[str]], None]:
    """What sends a refused start to Sentry: one event with the reason and the problems."""

    def report(reason: str, problems: Sequence[str]) -> None:
        from jobhost.observe.sentry.events import report_refused_start  # only a host that reports pays for the import

        report_refused_start(dsn, environment, release or deployed_revision(root), host_name, reason, problems)

    return report


def deployed_revision(root: Path) -> str | None:
    """The revision of the code that runs: the REVISION file a deploy writes, else the git commit."""
    try:
        text = (root / "REVISION").read_text().strip()
    except OSError:
        text = ""
    if text:
        return text
    import subprocess  # here: only a host that reports, without a REVISION file, runs git

    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None
