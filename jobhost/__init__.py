"""jobhost: recurring Python jobs, each run isolated, logged and remembered.

    from jobhost import job, every, cron

    @job(every(10).minutes, timeout="2m")
    def pull_exchange_rates():
        ...

`job`, `every` and `cron` register on `default_registry`, which the host's
entry point (``jobs.py``) runs; tests may build a `Registry` of their own.
"""

from jobhost.definition.monitors import MONITOR_RULES
from jobhost.definition.registry import Registry as Registry
from jobhost.definition.registry import add_rules
from jobhost.definition.schedules import cron as cron
from jobhost.definition.spec import JobSpec as JobSpec

add_rules(MONITOR_RULES)  # Sentry's monitor slugs, checked with each job's definition
default_registry = Registry()
job = default_registry.job
every = default_registry.every

__all__ = ["JobSpec", "Registry", "cron", "default_registry", "every", "job"]
