"""A weekday report: an example of a `cron(...)` job."""

import logging
from pathlib import Path

from jobhost import cron, job

log = logging.getLogger(__name__)


@job(cron("0 6 * * mon-fri", tz="Europe/London"), timeout="15m")
def weekday_morning_report(data_dir: Path):
    """Count the partitions written so far and log the newest, at 06:00 London time on weekdays."""
    exports = data_dir / "exports"
    partitions = sorted(exports.glob("partition-*.json")) if exports.is_dir() else []
    newest = partitions[-1].name if partitions else None
    log.info("export report", extra={"partitions": len(partitions), "newest": newest})
