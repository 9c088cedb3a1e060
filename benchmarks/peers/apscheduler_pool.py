"""APScheduler 3's BlockingScheduler with its thread pool or its process pool (`OUT MODE threads|processes [N]`)."""

from __future__ import annotations

import sys

from apscheduler.events import EVENT_SCHEDULER_STARTED
from apscheduler.executors.pool import ProcessPoolExecutor, ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from benchmarks.peers import BURST_EVERY
from benchmarks.peers.generated import module_of_jobs
from benchmarks.peers.stamp import stamp


def main() -> None:
    out, mode, pool = sys.argv[1], sys.argv[2], sys.argv[3]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    executor = ThreadPoolExecutor() if pool == "threads" else ProcessPoolExecutor()  # their default: 10 workers
    scheduler = BlockingScheduler(executors={"default": executor}, timezone="UTC")
    if mode == "pinned":
        scheduler.add_job(stamp, CronTrigger(second="*", timezone="UTC"), args=[out])
    elif mode == "light":
        for number in range(2):
            scheduler.add_job(stamp, CronTrigger(second="*", timezone="UTC"), args=[out, number])
    elif mode == "rate":
        scheduler.add_job(stamp, IntervalTrigger(seconds=1), args=[out])
    elif mode == "idle":
        scheduler.add_job(stamp, IntervalTrigger(hours=1), args=[out])
    elif mode == "scale":  # a module of `count` decorated functions, compiled and run here
        source = module_of_jobs("apscheduler", count)
        exec(compile(source, "scale_jobs.py", "exec"), {"OUT": out, "scheduler": scheduler})
    elif mode == "burst":  # the defaults: misfire_grace_time 1 s, a run more than 1 s late is dropped
        for number in range(count):
            scheduler.add_job(stamp, CronTrigger(second=f"*/{BURST_EVERY}", timezone="UTC"), args=[out, number])
    scheduler.add_listener(lambda event: print("ready", flush=True), EVENT_SCHEDULER_STARTED)  # noqa: T201
    scheduler.start()


if __name__ == "__main__":  # the process pool's workers import this module too
    main()
