"""Daily files: examples of `.at()` jobs in a time zone and of a job that asks for its slot."""

import datetime
import json
import logging
import time
from pathlib import Path

from jobhost import every, job

log = logging.getLogger(__name__)


@job(every().day.at("01:00", "UTC"), catchup="all", timeout="10m")
def write_daily_partition(slot: datetime.datetime, data_dir: Path):
    """Write the partition of the day before `slot` into `data_dir`/exports.

    Taking `slot` (the instant this run was due) instead of reading the clock
    means a late, retried or backfilled run writes the right day; taking
    `data_dir` (JOBS_DATA_DIR) means it writes where the job's user may.
    """
    day = (slot - datetime.timedelta(days=1)).date()
    exports = data_dir / "exports"
    exports.mkdir(exist_ok=True)
    target = exports / f"partition-{day.isoformat()}.json"
    target.write_text(json.dumps({"day": day.isoformat(), "written_for_slot": slot.isoformat()}) + "\n")
    log.info("partition written", extra={"path": str(target), "day": day.isoformat()})


@job(every().day.at("02:30", "Europe/London"), timeout="5m")
def prune_old_exports(data_dir: Path, keep_days: int = 30):
    """Delete export files older than `keep_days`, at 02:30 London time (DST included)."""
    exports = data_dir / "exports"
    if not exports.is_dir():
        print("nothing to prune: no exports yet")
        return
    cutoff = time.time() - keep_days * 86400
    removed = 0
    for path in exports.glob("partition-*.json"):
        if path.stat().st_mtime < cutoff:
            path.unlink()
            removed += 1
    print(f"pruned {removed} export file(s) older than {keep_days} days")
