"""Small checks of the machine the host runs on: examples of interval jobs."""

import logging
import os
import shutil
from pathlib import Path

from jobhost import every, job

log = logging.getLogger(__name__)


@job(every(1).minutes, timeout="20s")
def record_load_average():
    """Log the 1/5/15-minute load average, so a dashboard can graph it from the JSON logs."""
    one, five, fifteen = os.getloadavg()
    log.info("load average", extra={"load_1m": one, "load_5m": five, "load_15m": fifteen})


@job(every(10).minutes, timeout="30s")
def check_disk_space(data_dir: Path, minimum_free_percent: float = 10.0):
    """Fail (and so reach Sentry) when the disk the jobs write to (JOBS_DATA_DIR) is nearly full."""
    usage = shutil.disk_usage(data_dir)
    free_percent = 100 * usage.free / usage.total
    log.info("disk space", extra={"free_percent": round(free_percent, 1), "free_bytes": usage.free})
    if free_percent < minimum_free_percent:
        raise RuntimeError(f"only {free_percent:.1f}% free on the disk holding {data_dir}")
