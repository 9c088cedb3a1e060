"""APScheduler 3's BlockingScheduler with its thread pool or its process pool (`OUT MODE threads|processes`)."""

from __future__ import annotations

import sys

from apscheduler.executors.pool import ProcessPoolExecutor, ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from benchmarks.peers.stamp import stamp


def main() -> None:
    out, mode, pool = sys.argv[1], sys.argv[2], sys.argv[3]
    executor = ThreadPoolExecutor(4) if pool == "threads" else ProcessPoolExecutor(4)
    scheduler = BlockingScheduler(executors={"default": executor}, timezone="UTC")
    trigger = CronTrigger(second="*", timezone="UTC") if mode == "pinned" else IntervalTrigger(hours=1)
    scheduler.add_job(stamp, trigger, args=[out])
    scheduler.start()


if __name__ == "__main__":  # the process pool's workers import this module too
    main()
