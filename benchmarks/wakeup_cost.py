"""What one wakeup of the loop costs with 10, 1,000 and 10,000 registered jobs.

A wakeup asks the slot queue which jobs are due; with a heap that cost should
follow the number of due jobs, not the number of registered ones. For a peer,
the `schedule` library's own `Scheduler.run_pending()` / `idle_seconds` scan
every job on each call. Run: .venv/bin/python -m benchmarks.wakeup_cost
"""

from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

import schedule

from jobhost.definition.schedules import build_schedule
from jobhost.engine.slots import SlotQueue

UTC = ZoneInfo("UTC")
WAKEUPS = 2000


def jobhost_wakeup(n: int) -> float:
    """Microseconds per wakeup: one job due at each wakeup, the rest hours away."""
    scheduler = schedule.Scheduler()
    schedules = {f"hourly_{i}": build_schedule(scheduler.every(1).hours, UTC) for i in range(n - 1)}
    schedules["every_second"] = build_schedule(scheduler.every(1).seconds, UTC)
    start = dt.datetime(2026, 11, 23, 0, 0, 0, 500000, tzinfo=dt.UTC)
    queue = SlotQueue(schedules, start)
    began = time.perf_counter()
    for k in range(1, WAKEUPS + 1):
        due = queue.pop_due(start + dt.timedelta(seconds=k))
        assert len(due) == 1, due
        queue.next_due()
    return (time.perf_counter() - began) / WAKEUPS * 1e6


def schedule_lib_wakeup(n: int) -> float:
    """Microseconds per run_pending() + idle_seconds with nothing due, the peer's idle wakeup."""
    scheduler = schedule.Scheduler()
    for _ in range(n):
        scheduler.every(1).hours.do(lambda: None)
    began = time.perf_counter()
    for _ in range(WAKEUPS // 10):
        scheduler.run_pending()
        scheduler.idle_seconds  # noqa: B018 - the property is the work measured
    return (time.perf_counter() - began) / (WAKEUPS // 10) * 1e6


def main() -> None:
    print(f"{'jobs':>7}  {'jobhost µs/wakeup':>18}  {'schedule run_pending µs':>24}")  # noqa: T201
    for n in (10, 1000, 10000):
        print(f"{n:>7}  {jobhost_wakeup(n):>18.1f}  {schedule_lib_wakeup(n):>24.1f}")  # noqa: T201


if __name__ == "__main__":
    main()
