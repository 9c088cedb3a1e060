"""The `schedule` library's loop (`OUT MODE sleep1|idle [N]`): `sleep1` is the seed blog post's
`run_pending(); sleep(1)`, `idle` sleeps exactly until the next job (`idle_seconds()`)."""

from __future__ import annotations

import sys
import time

import schedule

from benchmarks.peers.generated import module_of_jobs
from benchmarks.peers.stamp import stamp

out, mode, wait = sys.argv[1], sys.argv[2], sys.argv[3]
count = int(sys.argv[4]) if len(sys.argv) > 4 else 1
if mode == "pinned":  # one job per second of the minute: each is pinned to its wall-clock second
    for second in range(60):
        schedule.every().minute.at(f":{second:02d}").do(stamp, out)
elif mode == "light":
    for second in range(60):
        for number in range(2):
            schedule.every().minute.at(f":{second:02d}").do(stamp, out, number)
elif mode == "rate":
    schedule.every(1).seconds.do(stamp, out)
elif mode == "idle":
    schedule.every().hour.do(stamp, out)
elif mode == "scale":  # a module of `count` decorated functions, compiled and run here
    exec(compile(module_of_jobs("schedule", count), "scale_jobs.py", "exec"), {"OUT": out})
print("ready", flush=True)  # noqa: T201 - read by the benchmark
while True:
    schedule.run_pending()
    idle = schedule.idle_seconds() if wait == "idle" else 1.0
    time.sleep(max(0.0, idle if idle is not None else 1.0))
