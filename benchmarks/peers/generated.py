"""N jobs as a person writes them: one decorated function each, in one module's source.

The scale comparison compiles and runs this source in every peer, so start-up pays what a
real module of N jobs costs (its compilation, a decorator per function), the same for each.
"""

from __future__ import annotations

HEADERS = {
    "jobhost": "from jobhost import every, job\n",
    "schedule": "import schedule\n",
    "apscheduler": "from apscheduler.triggers.interval import IntervalTrigger\n",
}
DECORATORS = {
    "jobhost": "@job(every(1).hours)",
    "schedule": "@schedule.repeat(schedule.every().hour)",
    "apscheduler": "@scheduler.scheduled_job(IntervalTrigger(hours=1))",  # `scheduler` given by the peer
}


def module_of_jobs(style: str, count: int) -> str:
    """The source of `count` jobs due in an hour, each stamping its number into OUT when run."""
    lines = [HEADERS[style], "from benchmarks.peers.stamp import stamp\n"]
    lines.extend(f"\n{DECORATORS[style]}\ndef job_{n}():\n    stamp(OUT, {n})\n" for n in range(count))
    return "".join(lines)
