"""The job cron runs (`python cron_job.py OUT`): a script whose first statement stamps the time."""

import time

now = time.time()

import sys  # noqa: E402 - after the stamp: the job's first statement is the time

with open(sys.argv[1], "a") as out:
    out.write(f"0 {now!r}\n")
